"""`disagg serve --prefill-min 0`: an idle prefill pool goes to 0, requests still
complete with local prefill, and those fallbacks bring one prefill replica back."""

from __future__ import annotations

import json
import urllib.request

import pytest

from .autoscale_support import StdoutLines
from .harness import ServeProcess, wait_until

# Seconds a step may take on a loaded two-core machine, worker start-up included.
STEP_TIMEOUT_S = 120.0


@pytest.fixture
def serve(tmp_path, tiny_model_dir):
    process = ServeProcess(
        [
            "--model",
            str(tiny_model_dir),
            "--prefill-min",
            "0",
            "--prefill-max",
            "1",
            "--autoscale-interval",
            "1",
            "--scale-down-stabilization",
            "2",
            "--min-remote-prefill-tokens",
            "8",
        ],
        tmp_path / "serve.log",
    )
    process.start()
    yield process
    process.stop()


def complete(url: str, prompt: list[int]) -> dict:
    body = json.dumps({"model": "tiny-llama", "prompt": prompt, "max_tokens": 3}).encode()
    request = urllib.request.Request(
        url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_prefill_pool_scales_to_zero_and_back(serve):
    stdout = StdoutLines(serve.process)

    scaled_to_zero = stdout.wait_for(r"prefill 1→0: queue depth 0", STEP_TIMEOUT_S)
    assert scaled_to_zero is not None, serve.log_tail()

    # From here on the router has no prefill replica to send the prompt to.
    dropped = wait_until(
        lambda: "router dropped replica=prefill[0]" in serve.log_path.read_text(),
        STEP_TIMEOUT_S,
        interval_s=0.5,
    )
    assert dropped, serve.log_tail()
    reply = complete(serve.url, list(range(1000, 1040)))
    assert reply["usage"]["completion_tokens"] == 3

    scaled_up = stdout.wait_for(r"prefill 0→1: \d+ local-prefill fallbacks?", STEP_TIMEOUT_S)
    assert scaled_up is not None, serve.log_tail()
