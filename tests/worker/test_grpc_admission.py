"""Admission over gRPC: a full queue rejects at once, and a cancelled stream frees its slot.

The replicas run the tiny model behind a gate (see grpc_support.GatedModel),
so a test can hold one request in the forward pass and fill the queue
behind it without racing the engine.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from disagg_worker.proto import worker_pb2 as pb
from grpc_support import gated, generate, running_server, stubs, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [1, 2, 3, 4]


def local(request_id: str, max_tokens: int = 2) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id,
        max_tokens=max_tokens,
        ignore_eos=True,
        prompt=pb.TokenIds(ids=PROMPT),
    )


async def test_full_prefill_queue_is_resource_exhausted(tiny_model):
    loaded, gate = gated(tiny_model)
    async with (
        running_server("decode", tiny_model) as (_, decode_address),
        running_server("prefill", loaded, max_queue=1) as (server, address),
        stubs(address) as client,
    ):
        engine = server.prefill_engine

        def prefill(request_id):
            request = pb.PrefillRequest(
                request_id=request_id, prompt_token_ids=PROMPT, decode_address=decode_address
            )
            return asyncio.ensure_future(client.prefill.Prefill(request, timeout=60))

        running = prefill("held-1")
        await wait_until(lambda: engine.inflight == 1, description="the first prefill to run")
        waiting = prefill("held-2")
        await wait_until(lambda: engine.queue_depth == 1, description="the second prefill to queue")
        load = await client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.prefill.Prefill(
                pb.PrefillRequest(
                    request_id="over-1", prompt_token_ids=PROMPT, decode_address=decode_address
                ),
                timeout=10,
            )
        gate.gate.set()
        await asyncio.gather(running, waiting)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full" in caught.value.details()
    assert (load.queue_depth, load.inflight) == (1, 1)


async def test_full_decode_queue_is_resource_exhausted(tiny_model):
    loaded, gate = gated(tiny_model)
    async with (
        running_server("decode", loaded, max_queue=1, max_batch=1) as (server, address),
        stubs(address) as client,
    ):
        engine = server.decode_engine
        running = asyncio.ensure_future(generate(client.decode, local("held-1")))
        await wait_until(lambda: engine.inflight == 1, description="the first request to run")
        waiting = asyncio.ensure_future(generate(client.decode, local("held-2")))
        await wait_until(lambda: engine.queue_depth == 1, description="the second request to queue")
        load = await client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await generate(client.decode, local("over-1"), timeout=10)
        gate.gate.set()
        finished = await asyncio.gather(running, waiting)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue full" in caught.value.details()
    assert (load.queue_depth, load.inflight) == (1, 1)
    assert [reason for _, reason in finished] == ["length", "length"]


async def test_rejected_remote_kv_stays_claimable(tiny_model):
    loaded, gate = gated(tiny_model)
    async with (
        running_server("decode", loaded, max_queue=1, max_batch=1) as (server, address),
        running_server("prefill", tiny_model) as (_, prefill_address),
        stubs(address) as client,
        stubs(prefill_address) as prefill_client,
    ):
        await prefill_client.prefill.Prefill(
            pb.PrefillRequest(request_id="kept-1", prompt_token_ids=PROMPT, decode_address=address),
            timeout=60,
        )
        engine = server.decode_engine
        running = asyncio.ensure_future(generate(client.decode, local("held-1")))
        await wait_until(lambda: engine.inflight == 1, description="the first request to run")
        waiting = asyncio.ensure_future(generate(client.decode, local("held-2")))
        await wait_until(lambda: engine.queue_depth == 1, description="the second request to queue")

        remote = pb.GenerateRequest(request_id="kept-1", max_tokens=3, remote_kv=True)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await generate(client.decode, remote, timeout=10)
        gate.gate.set()
        await asyncio.gather(running, waiting)
        tokens, finish = await generate(client.decode, remote)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(tokens) == 2
    assert finish == "length"


async def test_cancelled_stream_frees_slot(tiny_model):
    loaded, gate = gated(tiny_model)
    gate.gate.set()
    async with (
        running_server("decode", loaded, max_batch=1) as (server, address),
        stubs(address) as client,
    ):
        engine = server.decode_engine
        call = client.decode.Generate(local("long-1", max_tokens=250))
        first = await call.read()
        # Hold the engine in its next step so the request cannot finish on its own.
        gate.gate.clear()
        call.cancel()
        await wait_until(lambda: server.state.active_calls == 0, description="the call to end")
        gate.gate.set()

        await wait_until(lambda: engine.inflight == 0, description="the cancelled request's slot")
        tokens, finish = await generate(client.decode, local("after-1", max_tokens=2))

    assert len(first.token_ids) == 1
    assert engine.finished_total["cancelled"] == 1
    assert len(tokens) == 2
    assert finish == "length"
