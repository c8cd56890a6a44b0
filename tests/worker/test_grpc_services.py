"""Prefill, Decode, Worker and Health services of real replicas, over gRPC on 127.0.0.1.

A prefill and a decode replica of the tiny random model serve the module.
"""

from __future__ import annotations

import socket

import grpc
import pytest
import pytest_asyncio
from disagg_worker.model import load_model
from disagg_worker.proto import worker_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_support import generate, running_server, stubs

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [1, 17, 230, 4051, 12, 9]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def decode(tiny_model):
    async with running_server("decode", tiny_model, max_queue=4) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prefill(tiny_model):
    async with running_server("prefill", tiny_model, max_queue=3) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def decode_client(decode):
    async with stubs(decode[1]) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def prefill_client(prefill):
    async with stubs(prefill[1]) as client:
        yield client


def greedy(request_id: str, max_tokens: int, **source) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id,
        max_tokens=max_tokens,
        ignore_eos=True,
        sampling=pb.SamplingParams(temperature=0),
        **source,
    )


async def test_remote_prefill_continues_like_local(prefill_client, decode_client, decode):
    decode_server, decode_address = decode
    request = pb.PrefillRequest(
        request_id="remote-1", prompt_token_ids=PROMPT, decode_address=decode_address
    )
    reply = await prefill_client.prefill.Prefill(request, timeout=60)
    remote_rest, remote_finish = await generate(
        decode_client.decode, greedy("remote-1", 8, remote_kv=True)
    )
    local, local_finish = await generate(
        decode_client.decode, greedy("local-1", 8, prompt=pb.TokenIds(ids=PROMPT))
    )

    assert [reply.first_token_id, *remote_rest] == local
    assert remote_finish == "length"
    assert local_finish == "length"
    assert len(local) == 8
    assert decode_server.store.used_bytes == 0


async def test_prefill_reply_reports_transfer(prefill_client, decode, tiny_model):
    _, decode_address = decode
    request = pb.PrefillRequest(
        request_id="report-1", prompt_token_ids=PROMPT, decode_address=decode_address
    )
    reply = await prefill_client.prefill.Prefill(request, timeout=60)
    assert reply.kv_bytes == len(PROMPT) * tiny_model.kv_bytes_per_token
    assert reply.prefill_seconds > 0
    assert reply.transfer_seconds > 0
    assert reply.queue_seconds >= 0
    decode[0].store.claim("report-1")


async def test_remote_kv_max_tokens_one_sends_only_finish(prefill_client, decode_client, decode):
    await prefill_client.prefill.Prefill(
        pb.PrefillRequest(request_id="one-1", prompt_token_ids=PROMPT, decode_address=decode[1]),
        timeout=60,
    )
    tokens, finish = await generate(decode_client.decode, greedy("one-1", 1, remote_kv=True))
    assert tokens == []
    assert finish == "length"


async def test_unknown_remote_kv_is_not_found(decode_client):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(decode_client.decode, greedy("never-sent", 4, remote_kv=True))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "request_id=never-sent" in caught.value.details()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"request_id": "", "max_tokens": 4, "prompt": pb.TokenIds(ids=[1])}, "request_id"),
        ({"request_id": "p1", "max_tokens": 0, "prompt": pb.TokenIds(ids=[1])}, "max_tokens"),
        ({"request_id": "p2", "max_tokens": 4}, "source"),
        ({"request_id": "p3", "max_tokens": 4, "remote_kv": False}, "remote_kv"),
        ({"request_id": "p4", "max_tokens": 4, "prompt": pb.TokenIds(ids=[])}, "prompt.ids"),
        ({"request_id": "p5", "max_tokens": 4, "prompt": pb.TokenIds(ids=[10**6])}, "prompt.ids"),
        ({"request_id": "p6", "max_tokens": 4, "prompt": pb.TokenIds(ids=[1] * 256)}, "prompt.ids"),
        (
            {
                "request_id": "p7",
                "max_tokens": 4,
                "prompt": pb.TokenIds(ids=[1]),
                "sampling": pb.SamplingParams(temperature=-1),
            },
            "temperature",
        ),
        (
            {
                "request_id": "p8",
                "max_tokens": 4,
                "prompt": pb.TokenIds(ids=[1]),
                "sampling": pb.SamplingParams(temperature=1, top_p=1.5),
            },
            "top_p",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_bad_generate_names_field(decode_client, request_fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await generate(decode_client.decode, pb.GenerateRequest(**request_fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"request_id": "", "prompt_token_ids": [1]}, "request_id"),
        ({"request_id": "q1", "prompt_token_ids": []}, "prompt_token_ids"),
        ({"request_id": "q2", "prompt_token_ids": [10**6]}, "prompt_token_ids"),
        ({"request_id": "q3", "prompt_token_ids": [1], "decode_address": ""}, "decode_address"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_bad_prefill_names_field(prefill_client, decode, request_fields, field):
    request = pb.PrefillRequest(decode_address=decode[1])
    for name, value in request_fields.items():
        if name == "prompt_token_ids":
            request.prompt_token_ids[:] = value
        else:
            setattr(request, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await prefill_client.prefill.Prefill(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_prefill_to_unreachable_decode_is_unavailable(prefill_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await prefill_client.prefill.Prefill(
            pb.PrefillRequest(
                request_id="lost-1",
                prompt_token_ids=PROMPT,
                decode_address=f"127.0.0.1:{closed_port}",
            ),
            timeout=60,
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{closed_port}" in caught.value.details()


async def test_prefill_to_other_model_fails_precondition(prefill_client, tiny_model_dir):
    # The same weights in bfloat16 have another fingerprint.
    other = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    async with running_server("decode", other) as (other_server, other_address):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await prefill_client.prefill.Prefill(
                pb.PrefillRequest(
                    request_id="foreign-1", prompt_token_ids=PROMPT, decode_address=other_address
                ),
                timeout=60,
            )
        assert other_server.store.used_bytes == 0
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert other.fingerprint in caught.value.details()


async def test_get_load_reports_identity(prefill_client, decode_client, tiny_model):
    prefill_load = await prefill_client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)
    decode_load = await decode_client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)

    assert prefill_load.role == "prefill"
    assert prefill_load.max_queue == 3
    assert prefill_load.model_fingerprint == tiny_model.fingerprint
    assert prefill_load.model_name == tiny_model.name
    assert prefill_load.draining is False
    assert prefill_load.pending_kv_transfers == 0
    assert decode_load.role == "decode"
    assert decode_load.max_queue == 4
    assert (decode_load.queue_depth, decode_load.inflight) == (0, 0)


@pytest.mark.parametrize("service", ["", "disagg.v1.Prefill", "disagg.v1.Worker"])
async def test_prefill_health_serving(prefill_client, service):
    health = health_pb2_grpc.HealthStub(prefill_client.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["", "disagg.v1.Decode", "disagg.v1.KVTransfer"])
async def test_decode_health_serving(decode_client, service):
    health = health_pb2_grpc.HealthStub(decode_client.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_aggregated_generates_locally(tiny_model):
    async with running_server("aggregated", tiny_model) as (_, address), stubs(address) as client:
        tokens, finish = await generate(
            client.decode, greedy("aggregated-1", 3, prompt=pb.TokenIds(ids=PROMPT))
        )
        load = await client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)
    assert len(tokens) == 3
    assert finish == "length"
    assert load.role == "aggregated"
