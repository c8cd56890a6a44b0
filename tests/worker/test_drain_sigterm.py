"""SIGTERM drains a real `disagg worker` process, bounded by --drain-timeout.

The worker runs the real SmolLM2 model, whose decode speed on a CPU (about
16 tokens/s at batch 1) keeps a request in flight long enough to observe the
drain from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time

import aiohttp
import grpc
import pytest
from disagg_worker.proto import worker_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_support import generate, stubs, wait_until

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="function")]

STARTED = re.compile(r"started role=(\w+) grpc_port=(\d+) metrics_port=(\d+)")
PROMPT = [1, 9690, 314, 253, 1345, 28]


class WorkerProcess:
    """A `disagg worker` subprocess whose stderr is collected line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.grpc_address: str | None = None
        self.metrics_url: str | None = None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            match = STARTED.search(line)
            if match:
                self.grpc_address = f"127.0.0.1:{match.group(2)}"
                self.metrics_url = f"http://127.0.0.1:{match.group(3)}"

    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_exit(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await self._reader
        return code


@contextlib.asynccontextmanager
async def worker_process(*extra: str):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "disagg_worker",
        "worker",
        "decode",
        "--model",
        "smollm2",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        *extra,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = WorkerProcess(process)
    try:
        await wait_until(
            lambda: worker.grpc_address is not None or process.returncode is not None,
            timeout=180,
            description="the worker to log its start",
        )
        assert worker.grpc_address is not None, worker.log()
        yield worker
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def http_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status


def long_request(request_id: str, max_tokens: int) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        request_id=request_id,
        max_tokens=max_tokens,
        ignore_eos=True,
        prompt=pb.TokenIds(ids=PROMPT),
    )


async def test_sigterm_finishes_inflight_then_exits():
    async with worker_process("--drain-timeout", "60") as worker:
        async with stubs(worker.grpc_address) as client:
            health = health_pb2_grpc.HealthStub(client.channel)
            call = client.decode.Generate(long_request("drain-1", max_tokens=40), timeout=120)
            first = await call.read()
            worker.process.send_signal(signal.SIGTERM)

            status = health_pb2.HealthCheckResponse.SERVING
            deadline = time.monotonic() + 30
            while status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                status = reply.status
            load = await client.worker.GetLoad(pb.GetLoadRequest(), timeout=10)
            ready = await http_status(f"{worker.metrics_url}/health/ready")
            with pytest.raises(grpc.aio.AioRpcError) as rejected:
                await generate(client.decode, long_request("late-1", max_tokens=2), timeout=10)

            tokens = list(first.token_ids)
            finish = ""
            while (message := await call.read()) is not grpc.aio.EOF:
                tokens.extend(message.token_ids)
                finish = message.finish_reason
        code = await worker.wait_exit(timeout=60)

    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert load.draining is True
    assert ready == 503
    assert rejected.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(tokens) == 40
    assert finish == "length"
    assert code == 0
    assert "drained role=decode" in worker.log()


async def test_sigterm_exit_bounded_by_drain_timeout():
    async with (
        worker_process("--drain-timeout", "1") as worker,
        stubs(worker.grpc_address) as client,
    ):
        call = client.decode.Generate(long_request("endless-1", max_tokens=4000), timeout=120)
        await call.read()
        signalled_at = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while await call.read() is not grpc.aio.EOF:
                pass
        code = await worker.wait_exit(timeout=60)
        exit_seconds = time.monotonic() - signalled_at

    assert ended.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert code == 0
    # One second of drain plus stopping the engine and the servers.
    assert exit_seconds < 15
    assert "drain timed out role=decode" in worker.log()
