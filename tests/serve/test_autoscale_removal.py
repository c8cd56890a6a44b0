"""A replica removed from the router's endpoints leaves the rotation at once, but the
calls already running on it finish: the first step of a safe scale-down."""

from __future__ import annotations

import asyncio

import pytest
from disagg_worker.client import ReplicaPool
from disagg_worker.proto import worker_pb2 as pb
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
