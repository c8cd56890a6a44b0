"""A KV transfer the decode replica rejects falls back to local prefill (real workers).

The decode replica runs a different model (a tiny random Llama with the
same tokenizer), so its model fingerprint differs from the prefill
replica's and it rejects every KV transfer with FAILED_PRECONDITION.
"""

from __future__ import annotations

import time

import openai
import pytest
from disagg_worker.serve import ManagedProcess, disagg_command, free_port

from .harness import metric_value

pytestmark = pytest.mark.model


def worker(role: str, model: str) -> tuple[ManagedProcess, str]:
    grpc_port, metrics_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    argv = [
        *disagg_command(), "worker", role, "--model", model, "--host", "127.0.0.1",
        "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    health = f"http://127.0.0.1:{metrics_port}/health/ready"
    return ManagedProcess(f"{role}[0]", argv, {"OMP_NUM_THREADS": "1"}, health), (
        f"127.0.0.1:{grpc_port}"
    )


@pytest.fixture(scope="module")
def router_url(tiny_model_dir):
    prefill, prefill_address = worker("prefill", "smollm2")
    decode, decode_address = worker("decode", str(tiny_model_dir))
    port = free_port("127.0.0.1")
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
            "--prefill-endpoints",
            prefill_address,
            "--decode-endpoints",
            decode_address,
            "--min-remote-prefill-tokens",
            "16",
        ],
        {},
        f"http://127.0.0.1:{port}/health",
    )
    processes = [prefill, decode, router]
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 300
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            if router.healthy() and prefill.healthy():
                name = "disagg_router_ready_replicas"
                if metric_value(url + "/metrics", name, role="prefill") == 1:
                    break
            assert all(process.running() for process in processes), "a process exited"
            time.sleep(0.5)
        yield url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            if not process.wait(time.monotonic() + 30):
                process.kill()


def test_rejected_kv_transfer_completes_locally(router_url):
    with openai.OpenAI(base_url=router_url + "/v1", api_key="unused", max_retries=0) as client:
        result = client.completions.create(
            model="SmolLM2-135M-Instruct",
            prompt=list(range(2000, 2040)),
            max_tokens=3,
            extra_body={"ignore_eos": True},
        )
    assert result.usage.completion_tokens == 3
    reason = "kv_transfer_failed"
    local = metric_value(router_url + "/metrics", "disagg_local_prefill_total", reason=reason)
    assert local == 1
    retries = metric_value(router_url + "/metrics", "disagg_prefill_retries_total")
    assert retries == 0
