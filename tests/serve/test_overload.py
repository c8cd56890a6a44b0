"""Every decode replica full: HTTP 429 with Retry-After, never a hang (real worker)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from disagg_worker.serve import ManagedProcess, disagg_command, free_port

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def router_url():
    grpc_port, metrics_port, port = (free_port("127.0.0.1") for _ in range(3))
    # One request decoding and one waiting; a third is rejected.
    decode = ManagedProcess(
        "decode[0]",
        [
            *disagg_command(),
            "worker",
            "decode",
            "--model",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
            "--max-queue",
            "1",
            "--max-batch",
            "1",
        ],
        {"OMP_NUM_THREADS": "1"},
        f"http://127.0.0.1:{metrics_port}/health/ready",
    )
    router = ManagedProcess(
        "router",
        [
            *disagg_command(),
            "router",
            "--model",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--decode-endpoints",
            f"127.0.0.1:{grpc_port}",
            "--retry-after",
            "2",
        ],
        {},
        f"http://127.0.0.1:{port}/health",
    )
    processes = [decode, router]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 300
        while not (decode.healthy() and router.healthy()):
            assert time.monotonic() < deadline, "the decode replica or router did not start"
            assert all(process.running() for process in processes), "a process exited"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            if not process.wait(time.monotonic() + 30):
                process.kill()


async def test_full_decode_replica_gives_429(router_url):
    body = {
        "model": "SmolLM2-135M-Instruct",
        "prompt": "Tell me a long story.",
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
    }
    timeout = aiohttp.ClientTimeout(total=240)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def request():
            async with session.post(router_url + "/v1/completions", json=body) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After")

        outcomes = await asyncio.gather(*(request() for _ in range(6)))
    statuses = sorted(status for status, _ in outcomes)
    assert 200 in statuses
    assert 429 in statuses
    assert set(statuses) == {200, 429}
    assert {retry for status, retry in outcomes if status == 429} == {"2"}
