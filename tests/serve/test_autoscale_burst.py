"""`disagg serve` with autoscaling: a burst grows the prefill pool, and the pool
shrinks again under a lighter load without a failed request."""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.error
import urllib.request

import pytest

from .autoscale_support import StdoutLines
from .harness import ServeProcess, wait_until

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
# Seconds each phase may take on a loaded two-core machine.
PHASE_TIMEOUT_S = 150.0


class Clients:
    """`count` threads sending completions in a loop until stopped; every outcome is kept."""

    def __init__(self, url: str, count: int, seed: int) -> None:
        self.url = url + "/v1/completions"
        self.outcomes: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(seed + index,), daemon=True)
            for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, seed: int) -> None:
        generator = random.Random(seed)
        while not self._stop.is_set():
            # 300 prompt tokens take the prefill replica about a second.
            prompt = [generator.randrange(1000, 30000) for _ in range(300)]
            body = json.dumps(
                {"model": MODEL, "prompt": prompt, "max_tokens": 2, "ignore_eos": True}
            ).encode()
            request = urllib.request.Request(
                self.url, data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    text = json.loads(response.read())["choices"][0]["text"]
                    self.outcomes.append((response.status, text))
            except urllib.error.HTTPError as error:
                self.outcomes.append((error.code, error.read().decode(errors="replace")))
            except OSError as error:
                self.outcomes.append((0, str(error)))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=300)


@pytest.fixture
def serve(tmp_path):
    process = ServeProcess(
        [
            "--prefill-min",
            "1",
            "--prefill-max",
            "2",
            "--decode-max",
            "1",
            "--target-queue-depth",
            "2",
            "--autoscale-interval",
            "1",
            "--scale-down-stabilization",
            "8",
            "--min-remote-prefill-tokens",
            "32",
        ],
        tmp_path / "serve.log",
    )
    process.start()
    yield process
    process.stop()


def log_position(text: str, pattern: str) -> int:
    match = re.search(pattern, text)
    return match.start() if match else -1


def test_burst_scales_prefill_up_then_down(serve):
    stdout = StdoutLines(serve.process)

    # 1. A burst: eight clients keep the single prefill replica's queue above 2.
    burst = Clients(serve.url, count=8, seed=0)
    try:
        scaled_up = stdout.wait_for(r"prefill 1→2: queue depth \d+", PHASE_TIMEOUT_S)
    finally:
        burst.stop()
    assert scaled_up is not None, serve.log_tail()

    # 2. A lighter load that the pool keeps serving while prefill[1] is retired.
    light = Clients(serve.url, count=2, seed=100)
    try:
        scaled_down = stdout.wait_for(r"prefill 2→1", PHASE_TIMEOUT_S)
        stopped = scaled_down is not None and wait_until(
            lambda: "replica stopped replica=prefill[1]" in serve.log_path.read_text(),
            PHASE_TIMEOUT_S,
            interval_s=0.5,
        )
    finally:
        light.stop()
    assert scaled_down is not None, serve.log_tail()
    assert stopped, serve.log_tail()

    outcomes = burst.outcomes + light.outcomes
    failed = [outcome for outcome in outcomes if outcome[0] != 200]
    assert len(light.outcomes) > 0
    assert failed == []

    # 3. The retirement steps, in order, for the replica that left.
    log = serve.log_path.read_text()
    steps = [
        r"replica left the endpoints file replica=prefill\[1\]",
        r"router dropped replica=prefill\[1\]",
        r"draining replica=prefill\[1\]",
        r"replica stopped replica=prefill\[1\]",
    ]
    positions = [log_position(log, step) for step in steps]
    assert all(position >= 0 for position in positions), positions
    assert positions == sorted(positions)
