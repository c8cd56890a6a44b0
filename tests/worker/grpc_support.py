"""Helpers for the tests that talk to worker replicas over real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable

import grpc
import torch
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.proto import worker_pb2_grpc
from disagg_worker.server.app import WorkerOptions, create_server

LOCALHOST = "127.0.0.1"


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, description: str = ""
) -> None:
    """Poll `predicate` every 10 ms until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {description or predicate}"
            )
        await asyncio.sleep(0.01)


class GatedModel(torch.nn.Module):
    """Wraps a model so each forward pass waits until the test opens the gate.

    The engines run the real model; the gate only decides when, so a test can
    hold requests in flight and fill the admission queue deterministically.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.gate = threading.Event()
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if not self.gate.wait(timeout=60):
            raise TimeoutError("gate of GatedModel stayed closed for 60 s")
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


def gated(loaded) -> tuple[object, GatedModel]:
    """Return a copy of a LoadedModel whose model waits on a gate, and the gated model."""
    model = GatedModel(loaded.model)
    return dataclasses.replace(loaded, model=model), model


@contextlib.asynccontextmanager
async def running_server(role: str, loaded, **options):
    """Start a replica of `role` on an ephemeral port; stop it on exit."""
    server, port = create_server(role, f"{LOCALHOST}:0", loaded, WorkerOptions(**options))
    await server.start()
    try:
        yield server, f"{LOCALHOST}:{port}"
    finally:
        await server.stop(grace=0)


@contextlib.asynccontextmanager
async def stubs(address: str):
    """Yield a namespace of the worker stubs on one channel to `address`."""
    channel = grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 256 << 20)]
    )
    try:
        yield Stubs(
            channel=channel,
            prefill=worker_pb2_grpc.PrefillStub(channel),
            decode=worker_pb2_grpc.DecodeStub(channel),
            worker=worker_pb2_grpc.WorkerStub(channel),
            kv=worker_pb2_grpc.KVTransferStub(channel),
        )
    finally:
        await channel.close()


@dataclasses.dataclass
class Stubs:
    channel: grpc.aio.Channel
    prefill: worker_pb2_grpc.PrefillStub
    decode: worker_pb2_grpc.DecodeStub
    worker: worker_pb2_grpc.WorkerStub
    kv: worker_pb2_grpc.KVTransferStub


async def generate(stub: worker_pb2_grpc.DecodeStub, request: pb.GenerateRequest, timeout=60.0):
    """Run Generate to the end; return (token ids, finish reason of the last message)."""
    tokens: list[int] = []
    finish_reason = ""
    async for message in stub.Generate(request, timeout=timeout):
        tokens.extend(message.token_ids)
        finish_reason = message.finish_reason
    return tokens, finish_reason
