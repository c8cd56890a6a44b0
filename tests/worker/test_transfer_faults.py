"""KV transfer receiver: every malformed or unfit transfer is rejected and leaves nothing behind.

One decode replica (tiny random model) serves the whole module. Its KV store
holds 64 KiB and its gRPC messages are capped at 256 KiB, so budget and size
limits are reachable with small payloads: the tiny model's KV takes 512
bytes per token (2 layers x key and value x 2 KV heads x 16 dims x 4 bytes).
"""

from __future__ import annotations

import asyncio
import socket
import sys

import grpc
import pytest
import pytest_asyncio
import torch
from disagg_worker import metrics as m
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.kv_transfer import KVPayload, KVSender, KVTransferError, tensor_bytes
from grpc_support import running_server, stubs, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

STORE_BYTES = 64 << 10
MAX_MESSAGE_BYTES = 256 << 10


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def decode(tiny_model):
    async with running_server(
        "decode",
        tiny_model,
        kv_store_bytes=STORE_BYTES,
        max_message_bytes=MAX_MESSAGE_BYTES,
        kv_chunk_bytes=16 << 10,
    ) as (server, address):
        yield server, address


@pytest_asyncio.fixture(loop_scope="module")
async def client(decode):
    _, address = decode
    async with stubs(address) as namespace:
        yield namespace


@pytest.fixture(autouse=True)
def store_starts_empty(decode):
    server, _ = decode
    assert server.store.used_bytes == 0


def make_payload(loaded, request_id: str, tokens: int = 10, seed: int = 0) -> KVPayload:
    generator = torch.Generator().manual_seed(seed)
    shape = (1, loaded.num_kv_heads, tokens, loaded.head_dim)
    tensors = [
        torch.randn(shape, generator=generator, dtype=torch.float32)
        for _ in range(2 * loaded.num_layers)
    ]
    return KVPayload(
        request_id=request_id,
        fingerprint=loaded.fingerprint,
        tensors=tensors,
        prompt_token_ids=list(range(1, tokens + 1)),
        first_token_id=7,
    )


def payload_bytes(payload: KVPayload) -> bytes:
    return b"".join(bytes(tensor_bytes(tensor)) for tensor in payload.tensors)


def chunk(offset: int, data: bytes) -> pb.KVTransferMessage:
    return pb.KVTransferMessage(chunk=pb.KVChunk(offset=offset, data=data))


def header_message(header: pb.KVHeader) -> pb.KVTransferMessage:
    return pb.KVTransferMessage(header=header)


async def transfer(client, messages) -> pb.KVTransferAck:
    return await client.kv.Transfer(iter(messages), timeout=30)


async def rejected(client, messages) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await transfer(client, messages)
    return caught.value


def failures(server, reason: str) -> float:
    return server.metrics.kv_transfer_failures.labels(reason)._value.get()


async def test_sender_transfer_is_stored_intact(decode, tiny_model):
    server, address = decode
    payload = make_payload(tiny_model, "stored-1", tokens=40)
    sender = KVSender(chunk_bytes=3000, max_message_bytes=MAX_MESSAGE_BYTES)
    try:
        result = await sender.send(address, payload)
    finally:
        await sender.close()
    assert result.ack.bytes_received == payload.header().total_bytes
    entry = server.store.claim("stored-1")
    assert entry.prompt_token_ids == list(payload.prompt_token_ids)
    assert entry.first_token_id == 7
    for received, sent in zip(entry.tensors, payload.tensors, strict=True):
        assert torch.equal(received, sent)


async def test_protobuf_client_transfer_is_stored(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "protobuf-1")
    data = payload_bytes(payload)
    messages = [header_message(payload.header()), chunk(0, data[:1000]), chunk(1000, data[1000:])]
    ack = await transfer(client, messages)
    assert ack.bytes_received == len(data)
    entry = server.store.claim("protobuf-1")
    assert torch.equal(entry.tensors[-1], payload.tensors[-1])


async def test_fingerprint_mismatch_names_both(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "foreign-1")
    header = payload.header()
    header.model_fingerprint = "f" * 64
    before = failures(server, m.FAILURE_FINGERPRINT_MISMATCH)

    error = await rejected(client, [header_message(header), chunk(0, payload_bytes(payload))])

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "f" * 64 in error.details()
    assert tiny_model.fingerprint in error.details()
    assert server.store.used_bytes == 0
    assert server.store.entries == 0
    assert failures(server, m.FAILURE_FINGERPRINT_MISMATCH) == before + 1


def _wrong_dtype(header):
    header.dtype = "bfloat16"


def _wrong_layers(header):
    header.num_layers += 1


def _missing_shape(header):
    del header.shapes[-1]


def _wrong_heads(header):
    header.shapes[1].dims[1] += 1


def _tokens_disagree_with_prompt(header):
    header.prompt_token_ids.append(5)


def _total_bytes_disagrees(header):
    header.total_bytes += 4


def _empty_prompt(header):
    del header.prompt_token_ids[:]


def _empty_request_id(header):
    header.request_id = ""


@pytest.mark.parametrize(
    ("corrupt", "expected_words"),
    [
        (_wrong_dtype, "dtype 'bfloat16'"),
        (_wrong_layers, "num_layers 3"),
        (_missing_shape, "3 shapes, expected 4"),
        (_wrong_heads, "shape 1 is [1, 3, 10, 16]"),
        (_tokens_disagree_with_prompt, "shape 0 is [1, 2, 10, 16], expected [1, 2, 11, 16]"),
        (_total_bytes_disagrees, "total_bytes 5124 differs from 5120"),
        (_empty_prompt, "prompt_token_ids is empty"),
        (_empty_request_id, "request_id is empty"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_bad_header_is_invalid_argument(decode, client, tiny_model, corrupt, expected_words):
    server, _ = decode
    payload = make_payload(tiny_model, "bad-header")
    header = payload.header()
    corrupt(header)

    error = await rejected(client, [header_message(header), chunk(0, payload_bytes(payload))])

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected_words in error.details()
    assert server.store.used_bytes == 0


async def test_short_payload_is_invalid_argument(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "short-1")
    data = payload_bytes(payload)

    error = await rejected(client, [header_message(payload.header()), chunk(0, data[:-4])])

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"ended after {len(data) - 4} of {len(data)} bytes" in error.details()
    assert server.store.used_bytes == 0


async def test_payload_past_total_is_invalid_argument(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "long-1")
    data = payload_bytes(payload)

    error = await rejected(client, [header_message(payload.header()), chunk(0, data + b"1234")])

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "past total_bytes" in error.details()
    assert server.store.used_bytes == 0


async def test_chunk_out_of_order_is_invalid_argument(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "order-1")
    data = payload_bytes(payload)
    messages = [header_message(payload.header()), chunk(1000, data[1000:]), chunk(0, data[:1000])]

    error = await rejected(client, messages)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "offset 1000 out of order, expected offset 0" in error.details()
    assert server.store.used_bytes == 0


async def test_chunk_before_header_is_invalid_argument(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "headless-1")

    error = await rejected(client, [chunk(0, payload_bytes(payload))])

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message must be a header" in error.details()
    assert server.store.used_bytes == 0


async def test_empty_stream_is_invalid_argument(decode, client):
    error = await rejected(client, [])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ended before a header" in error.details()


async def test_second_header_is_invalid_argument(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "twice-1")
    data = payload_bytes(payload)
    header = header_message(payload.header())

    error = await rejected(client, [header, chunk(0, data[:100]), header])

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "a second header arrived after 100 bytes" in error.details()
    assert server.store.used_bytes == 0


async def test_message_over_size_limit_is_resource_exhausted(decode, client, tiny_model):
    # gRPC itself rejects a message above grpc.max_receive_message_length with
    # RESOURCE_EXHAUSTED before the service reads it.
    server, _ = decode
    payload = make_payload(tiny_model, "huge-1", tokens=100)
    oversized = chunk(0, bytes(MAX_MESSAGE_BYTES + 1))

    error = await rejected(client, [header_message(payload.header()), oversized])

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in error.details()
    await wait_until(
        lambda: server.store.used_bytes == 0, description="the reservation to be released"
    )


async def test_store_over_budget_is_resource_exhausted(decode, client, tiny_model):
    server, _ = decode
    # 200 tokens x 512 bytes = 100 KiB, above the 64 KiB store.
    payload = make_payload(tiny_model, "big-1", tokens=200)
    before = failures(server, m.FAILURE_STORE_FULL)

    error = await rejected(client, [header_message(payload.header())])

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "KV store full" in error.details()
    assert server.store.used_bytes == 0
    assert failures(server, m.FAILURE_STORE_FULL) == before + 1


async def test_duplicate_request_id_is_already_exists(decode, client, tiny_model):
    server, _ = decode
    payload = make_payload(tiny_model, "twin-1")
    messages = [header_message(payload.header()), chunk(0, payload_bytes(payload))]
    await transfer(client, messages)

    error = await rejected(client, messages)

    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "twin-1" in error.details()
    server.store.claim("twin-1")


def broken_transfers(server) -> float:
    return failures(server, m.FAILURE_INCOMPLETE) + failures(server, m.FAILURE_ABORTED)


async def test_sender_cancel_frees_partial_entry(decode, tiny_model):
    server, address = decode
    payload = make_payload(tiny_model, "cancel-1", tokens=100)
    data = payload_bytes(payload)
    before = broken_transfers(server)
    never = asyncio.Event()

    async def header_and_half():
        yield header_message(payload.header())
        yield chunk(0, data[: len(data) // 2])
        await never.wait()

    async with stubs(address) as client:
        call = client.kv.Transfer(header_and_half())
        await wait_until(
            lambda: server.store.used_bytes == len(data), description="the transfer's reservation"
        )
        await wait_until(
            lambda: server.kv_service.receiving == 1, description="the transfer to be in progress"
        )
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    await wait_until(
        lambda: server.store.used_bytes == 0, description="the partial entry to be freed"
    )
    assert server.store.entries == 0
    await wait_until(
        lambda: broken_transfers(server) == before + 1, description="the failure count"
    )


# A sender process that sends the header and half the payload, then waits to be killed.
_SENDER_SCRIPT = """
import sys, time
import grpc
from disagg_worker.proto import worker_pb2 as pb, worker_pb2_grpc

address, header_hex, half_hex = sys.argv[1:4]
def messages():
    yield pb.KVTransferMessage(header=pb.KVHeader.FromString(bytes.fromhex(header_hex)))
    yield pb.KVTransferMessage(chunk=pb.KVChunk(offset=0, data=bytes.fromhex(half_hex)))
    time.sleep(600)
channel = grpc.insecure_channel(address)
worker_pb2_grpc.KVTransferStub(channel).Transfer(messages())
"""


async def test_killed_sender_frees_partial_entry(decode, tiny_model):
    server, address = decode
    payload = make_payload(tiny_model, "killed-1", tokens=100)
    data = payload_bytes(payload)
    before = broken_transfers(server)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SENDER_SCRIPT,
        address,
        payload.header().SerializeToString().hex(),
        data[: len(data) // 2].hex(),
    )
    try:
        await wait_until(
            lambda: server.store.used_bytes == len(data),
            timeout=60,
            description="the sender process to reserve its transfer",
        )
    finally:
        process.kill()
        await process.wait()

    await wait_until(
        lambda: server.store.used_bytes == 0, description="the partial entry to be freed"
    )
    assert server.store.entries == 0
    await wait_until(
        lambda: broken_transfers(server) == before + 1, description="the failure count"
    )


async def test_sender_to_closed_port_is_unreachable(tiny_model):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    sender = KVSender(timeout_seconds=5)
    try:
        with pytest.raises(KVTransferError) as caught:
            await sender.send(f"127.0.0.1:{closed_port}", make_payload(tiny_model, "nowhere-1"))
    finally:
        await sender.close()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == m.FAILURE_UNREACHABLE
    assert f"127.0.0.1:{closed_port}" in str(caught.value)
