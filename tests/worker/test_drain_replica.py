"""Draining an in-process replica: nothing new is admitted, in-flight work finishes first."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.kv_transfer import KVPayload, KVSender, KVTransferError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_support import gated, generate, running_server, stubs, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [1, 2, 3, 4]


def local(request_id: str, max_tokens: int = 3) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id,
        max_tokens=max_tokens,
        ignore_eos=True,
        prompt=pb.TokenIds(ids=PROMPT),
    )


async def test_drain_waits_for_inflight_generate(tiny_model):
    loaded, gate = gated(tiny_model)
    async with (
        running_server("decode", loaded) as (server, address),
        stubs(address) as client,
    ):
        running = asyncio.ensure_future(generate(client.decode, local("inflight-1")))
        await wait_until(
            lambda: server.decode_engine.inflight == 1, description="the request to run"
        )
        drain = asyncio.ensure_future(server.drain(timeout=30))
        await wait_until(lambda: server.state.draining, description="the drain to start")
        still_draining = not drain.done()
        gate.gate.set()
        tokens, finish = await running
        drained = await drain

    assert still_draining
    assert drained is True
    assert len(tokens) == 3
    assert finish == "length"


async def test_drain_times_out_with_stuck_request(tiny_model):
    loaded, gate = gated(tiny_model)
    async with (
        running_server("decode", loaded) as (server, address),
        stubs(address) as client,
    ):
        running = asyncio.ensure_future(generate(client.decode, local("stuck-1")))
        await wait_until(
            lambda: server.decode_engine.inflight == 1, description="the request to run"
        )
        drained = await server.drain(timeout=0.2)
        gate.gate.set()
        await running
    assert drained is False


@pytest.mark.parametrize("role", ["prefill", "decode"])
async def test_draining_replica_rejects_new_work(tiny_model, role):
    async with (
        running_server(role, tiny_model) as (server, address),
        stubs(address) as client,
    ):
        assert await server.drain(timeout=5)
        health = health_pb2_grpc.HealthStub(client.channel)
        status = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        load = await client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if role == "prefill":
                await client.prefill.Prefill(
                    pb.PrefillRequest(
                        request_id="late-1", prompt_token_ids=PROMPT, decode_address=address
                    ),
                    timeout=10,
                )
            else:
                await generate(client.decode, local("late-1"), timeout=10)

    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert load.draining is True
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in caught.value.details()


async def test_draining_decode_rejects_kv_transfer(tiny_model):
    async with running_server("decode", tiny_model) as (server, address):
        assert await server.drain(timeout=5)
        shape = (1, tiny_model.num_kv_heads, len(PROMPT), tiny_model.head_dim)
        payload = KVPayload(
            request_id="late-kv-1",
            fingerprint=tiny_model.fingerprint,
            tensors=[torch.zeros(shape) for _ in range(2 * tiny_model.num_layers)],
            prompt_token_ids=PROMPT,
            first_token_id=1,
        )
        sender = KVSender()
        try:
            with pytest.raises(KVTransferError) as caught:
                await sender.send(address, payload)
        finally:
            await sender.close()
        assert server.store.used_bytes == 0
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "draining" in str(caught.value)
