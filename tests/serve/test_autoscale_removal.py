"""The steps of a safe scale-down on real gRPC: a replica removed from the router's
endpoints leaves the rotation at once while its running calls finish, and a prefill
replica's drain waits until its KV transfers are acknowledged."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from disagg_worker.client import ReplicaPool
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.kv_transfer import SERVICE_NAME, KVPayload
from worker.grpc_support import gated, generate, running_server, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_removed_replica_call_finishes(tiny_model):
    loaded, gate = gated(tiny_model)
    pool = ReplicaPool("decode")
    async with running_server("decode", loaded) as (server, address):
        await pool.set_endpoints([address])
        replica = pool.choose()
        assert replica is not None

        request = pb.GenerateRequest(
            request_id="removed-1", max_tokens=5, ignore_eos=True, prompt=pb.TokenIds(ids=[1, 2, 3])
        )
        running = asyncio.ensure_future(generate(replica.decode, request))
        await wait_until(lambda: server.decode_engine.inflight == 1, 10.0)

        await pool.set_endpoints([])
        chosen_after_removal = pool.choose()
        gate.gate.set()
        tokens, finish = await running
        await pool.close()

    assert chosen_after_removal is None
    assert replica.ready is False
    assert len(tokens) == 5
    assert finish == "length"


class HeldAckReceiver:
    """A KVTransfer endpoint that reads every chunk, then holds the ack until released."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.server = grpc.aio.server()
        handler = grpc.stream_unary_rpc_method_handler(
            self._transfer, response_serializer=pb.KVTransferAck.SerializeToString
        )
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE_NAME, {"Transfer": handler})]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _transfer(self, request_iterator, context) -> pb.KVTransferAck:
        total = 0
        async for raw in request_iterator:
            total += len(raw)
        self.received.set()
        await self.release.wait()
        return pb.KVTransferAck(bytes_received=total, seconds=0.0)


async def test_prefill_drain_waits_for_kv_ack(tiny_model):
    receiver = HeldAckReceiver()
    await receiver.server.start()
    shape = (1, tiny_model.num_kv_heads, 3, tiny_model.head_dim)
    payload = KVPayload(
        request_id="held-ack-1",
        fingerprint=tiny_model.fingerprint,
        tensors=[torch.zeros(shape) for _ in range(2 * tiny_model.num_layers)],
        prompt_token_ids=[1, 2, 3],
        first_token_id=1,
    )
    try:
        async with running_server("prefill", tiny_model) as (server, _):
            sending = asyncio.ensure_future(
                server.sender.send(f"127.0.0.1:{receiver.port}", payload)
            )
            await asyncio.wait_for(receiver.received.wait(), timeout=10)
            drain = asyncio.ensure_future(server.drain(timeout=30))
            # Six drain polls: a drain that ignored the pending transfer would be done.
            await asyncio.sleep(0.3)
            waiting_for_ack = not drain.done()
            pending_while_held = server.sender.pending
            receiver.release.set()
            drained = await drain
            result = await sending
    finally:
        await receiver.server.stop(grace=0)

    assert pending_while_held == 1
    assert waiting_for_ack
    assert drained is True
    assert result.ack.bytes_received > 0
