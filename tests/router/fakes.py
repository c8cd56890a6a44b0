"""A scriptable gRPC worker for fast router tests (no model).

It serves the real protocol (Prefill, Decode, Worker, grpc.health.v1) on
127.0.0.1 and replies from a script: which token ids to stream, which
status to fail with. The end-to-end tests use the real workers instead.
"""

from __future__ import annotations

import asyncio

import grpc
from disagg_worker.proto import worker_pb2, worker_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio


class FakeWorker(
    worker_pb2_grpc.PrefillServicer, worker_pb2_grpc.DecodeServicer, worker_pb2_grpc.WorkerServicer
):
    def __init__(self, role: str, reply_ids: list[int], host: str = "127.0.0.1") -> None:
        self.role = role
        self.host = host
        self.reply_ids = reply_ids
        # Status code every Prefill / Generate call fails with; None serves normally.
        self.prefill_error: grpc.StatusCode | None = None
        self.prefill_error_details = ""
        self.generate_error: grpc.StatusCode | None = None
        # Status code of Generate calls with remote_kv only.
        self.remote_kv_error: grpc.StatusCode | None = None
        self.token_delay_s = 0.0
        self.prefill_calls: list[worker_pb2.PrefillRequest] = []
        self.generate_calls: list[worker_pb2.GenerateRequest] = []
        self.inflight = 0
        self.cancelled = 0
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self, port: int = 0) -> str:
        self.server = grpc.aio.server()
        worker_pb2_grpc.add_PrefillServicer_to_server(self, self.server)
        worker_pb2_grpc.add_DecodeServicer_to_server(self, self.server)
        worker_pb2_grpc.add_WorkerServicer_to_server(self, self.server)
        health = health_aio.HealthServicer()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        bound = self.server.add_insecure_port(f"{self.host}:{port}")
        await self.server.start()
        self.address = f"{self.host}:{bound}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    async def Prefill(self, request, context):
        self.prefill_calls.append(request)
        if self.prefill_error is not None:
            details = self.prefill_error_details or f"scripted {self.prefill_error.name}"
            await context.abort(self.prefill_error, details)
        return worker_pb2.PrefillResponse(first_token_id=self.reply_ids[0])

    async def Generate(self, request, context):
        self.generate_calls.append(request)
        if self.generate_error is not None:
            await context.abort(self.generate_error, f"scripted {self.generate_error.name}")
        remote = request.WhichOneof("source") == "remote_kv"
        if remote and self.remote_kv_error is not None:
            await context.abort(self.remote_kv_error, f"scripted {self.remote_kv_error.name}")
        # With remote KV the first token came with the Prefill reply.
        ids = self.reply_ids[1:] if remote else self.reply_ids
        budget = request.max_tokens - (1 if remote else 0)
        self.inflight += 1
        try:
            for index, token_id in enumerate(ids[:budget]):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                reason = ""
                if index == min(len(ids), budget) - 1:
                    reason = "length" if budget <= len(ids) else "stop"
                yield worker_pb2.GenerateResponse(token_ids=[token_id], finish_reason=reason)
            if budget <= 0:
                yield worker_pb2.GenerateResponse(finish_reason="length")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.inflight -= 1

    async def GetLoad(self, request, context):
        return worker_pb2.GetLoadResponse(
            role=self.role, inflight=self.inflight, max_queue=16, model_name="fake"
        )
