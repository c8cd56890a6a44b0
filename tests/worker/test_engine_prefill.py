"""PrefillEngine: results, admission limits, exact queue counts, cancellation and drain."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest
import torch
from disagg_worker.engine import Draining, PrefillEngine, QueueFull
from disagg_worker.engine.forward import run_prompt
from disagg_worker.kv import cache_to_tensors
from disagg_worker.sampling import SamplingParams

GREEDY = SamplingParams()


class GatedModel:
    """Wraps a model so each forward waits until the test opens the gate."""

    def __init__(self, model) -> None:
        self.model = model
        self.entered = threading.Event()
        self.gate = threading.Event()

    def __call__(self, **kwargs):
        self.entered.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        return self.model(**kwargs)


@pytest.fixture
def gated(tiny_model):
    gate = GatedModel(tiny_model.model)
    return dataclasses.replace(tiny_model, model=gate), gate


def test_result_matches_direct_forward(tiny_model):
    engine = PrefillEngine(tiny_model, max_queue=4)
    try:
        result = engine.submit("r1", [3, 4, 5, 6], GREEDY).result(timeout=30)
    finally:
        engine.close()
    logits, cache = run_prompt(tiny_model, [3, 4, 5, 6])
    assert result.first_token_id == int(torch.argmax(logits))
    for got, expected in zip(result.tensors, cache_to_tensors(cache), strict=True):
        assert torch.equal(got, expected)
    assert result.nbytes == 4 * tiny_model.kv_bytes_per_token
    assert result.prefill_seconds > 0
    assert result.queue_seconds >= 0


def test_counters_after_prefill(tiny_model):
    engine = PrefillEngine(tiny_model, max_queue=4)
    try:
        engine.submit("r1", [3, 4, 5], GREEDY).result(timeout=30)
    finally:
        engine.close()
    assert engine.prompt_tokens_total == 3
    assert engine.generation_tokens_total == 1
    assert engine.completed_total == 1


async def test_async_prefill_returns_result(tiny_model):
    engine = PrefillEngine(tiny_model, max_queue=4)
    try:
        result = await engine.prefill("r1", [3, 4, 5], GREEDY)
    finally:
        engine.close()
    assert len(result.tensors) == 2 * tiny_model.num_layers


def test_queue_full_raises_at_once(gated):
    loaded, gate = gated
    engine = PrefillEngine(loaded, max_queue=2)
    try:
        running = engine.submit("running", [3], GREEDY)
        assert gate.entered.wait(timeout=30)
        waiting = [engine.submit(f"w{index}", [3], GREEDY) for index in range(2)]
        with pytest.raises(QueueFull, match="request_id=rejected"):
            engine.submit("rejected", [3], GREEDY)
        gate.gate.set()
        for future in [running, *waiting]:
            future.result(timeout=30)
    finally:
        gate.gate.set()
        engine.close()


def test_queue_depth_and_inflight_are_exact(gated):
    loaded, gate = gated
    engine = PrefillEngine(loaded, max_queue=4)
    try:
        assert (engine.queue_depth, engine.inflight) == (0, 0)
        first = engine.submit("first", [3], GREEDY)
        assert gate.entered.wait(timeout=30)
        assert (engine.queue_depth, engine.inflight) == (0, 1)
        others = [engine.submit(f"w{index}", [3], GREEDY) for index in range(3)]
        assert (engine.queue_depth, engine.inflight) == (3, 1)
        gate.gate.set()
        for future in [first, *others]:
            future.result(timeout=30)
        assert engine.drain(timeout=30)
        assert (engine.queue_depth, engine.inflight) == (0, 0)
    finally:
        gate.gate.set()
        engine.close()


async def test_cancelled_waiting_request_leaves_queue(gated):
    loaded, gate = gated
    engine = PrefillEngine(loaded, max_queue=4)
    try:
        running = asyncio.create_task(engine.prefill("running", [3], GREEDY))
        assert await asyncio.to_thread(gate.entered.wait, 30)
        waiting = asyncio.create_task(engine.prefill("waiting", [3], GREEDY))
        await asyncio.sleep(0)
        assert engine.queue_depth == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert engine.queue_depth == 0
        gate.gate.set()
        await running
    finally:
        gate.gate.set()
        engine.close()


def test_drain_rejects_new_requests(tiny_model):
    engine = PrefillEngine(tiny_model, max_queue=4)
    assert engine.drain(timeout=30)
    with pytest.raises(Draining):
        engine.submit("late", [3], GREEDY)


def test_close_fails_waiting_requests(gated):
    loaded, gate = gated
    engine = PrefillEngine(loaded, max_queue=4)
    running = engine.submit("running", [3], GREEDY)
    assert gate.entered.wait(timeout=30)
    waiting = engine.submit("waiting", [3], GREEDY)
    closer = threading.Thread(target=engine.close)
    closer.start()
    with pytest.raises(Draining):
        waiting.result(timeout=30)
    gate.gate.set()
    closer.join(timeout=30)
    assert running.result(timeout=30).first_token_id >= 0


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([], "empty"), ([10**9], "outside the vocabulary"), ([3] * 256, "context")],
)
def test_invalid_prompt_raises(tiny_model, prompt, message):
    engine = PrefillEngine(tiny_model, max_queue=4)
    try:
        with pytest.raises(ValueError, match=message):
            engine.submit("bad", prompt, GREEDY)
    finally:
        engine.close()
