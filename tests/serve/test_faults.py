"""Faults against a real `disagg serve`: a killed prefill replica, a client
disconnect, the supervisor's restart, and SIGTERM stopping every process."""

from __future__ import annotations

import os
import random
import signal
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import openai
import pytest

from .harness import ServeProcess, metric_value, pid_alive, wait_until

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    process = ServeProcess(
        ["--prefill-replicas", "2", "--decode-replicas", "1", "--min-remote-prefill-tokens", "32"],
        tmp_path_factory.mktemp("serve") / "serve.log",
    )
    process.start()
    yield process
    process.stop()


def router_metric(serve, name, **labels) -> float:
    return metric_value(serve.url + "/metrics", name, **labels) or 0.0


def long_prompt(seed: int, length: int = 300) -> list[int]:
    generator = random.Random(seed)
    return [generator.randrange(1000, 30000) for _ in range(length)]


def test_killed_prefill_replica_requests_complete(serve):
    victim = serve.worker_pids("prefill")[0]
    client = openai.OpenAI(base_url=serve.url + "/v1", api_key="unused", max_retries=0)

    def complete(seed):
        return client.completions.create(
            model=MODEL, prompt=long_prompt(seed), max_tokens=4, extra_body={"ignore_eos": True}
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(complete, seed) for seed in range(4)]
        # Kill once both prefill replicas are busy, so calls are in flight on the victim.
        wait_until(
            lambda: router_metric(serve, "disagg_router_inflight_requests", role="prefill") >= 2,
            timeout_s=30,
            interval_s=0.05,
        )
        os.kill(victim, signal.SIGKILL)
        results = [future.result(timeout=300) for future in futures]

    assert [result.usage.completion_tokens for result in results] == [4, 4, 4, 4]
    retried = router_metric(serve, "disagg_prefill_retries_total")
    local = router_metric(serve, "disagg_local_prefill_total", reason="prefill_failed")
    assert retried + local >= 1


def test_killed_replica_restarted_and_rejoins(serve):
    # Follows the kill above: the supervisor restarts the replica, and the
    # router takes it back once it is healthy.
    assert wait_until(lambda: len(serve.worker_pids("prefill")) == 2, timeout_s=60)
    assert wait_until(
        lambda: router_metric(serve, "disagg_router_ready_replicas", role="prefill") == 2,
        timeout_s=240,
        interval_s=1.0,
    ), serve.log_tail()
    assert "restarting replica=prefill[0]" in serve.log_path.read_text()


async def test_client_disconnect_frees_decode_slot(serve):
    decode_pid = serve.worker_pids("decode")[0]
    decode_metrics = f"http://127.0.0.1:{serve.worker_metrics_port(decode_pid)}/metrics"

    def decode_inflight() -> float:
        return metric_value(decode_metrics, "disagg_inflight_requests", role="decode") or 0.0

    body = {
        "model": MODEL,
        "prompt": "Count from one to one thousand:",
        "max_tokens": 500,
        "ignore_eos": True,
        "stream": True,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(serve.url + "/v1/completions", json=body) as response,
    ):
        assert response.status == 200
        chunks = 0
        async for line in response.content:
            chunks += line.startswith(b"data: ")
            if chunks >= 3:
                break
        assert decode_inflight() == 1
    # Leaving the block closed the connection mid-stream.
    assert wait_until(lambda: decode_inflight() == 0, timeout_s=30)
    assert router_metric(serve, "disagg_router_cancelled_total") >= 1


def test_sigterm_stops_every_process(serve):
    children = serve.children()
    assert len(children) == 4, children  # router, 2 prefill, 1 decode
    assert serve.stop() == 0
    assert [pid for pid in children if pid_alive(pid)] == []
