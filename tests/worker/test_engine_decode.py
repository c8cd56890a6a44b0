"""DecodeEngine on the tiny model: outputs, stop rules, admission, cancellation, drain."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch
from disagg_worker.engine import DecodeEngine, DecodeRequest, Draining, PrefillEngine, QueueFull
from disagg_worker.engine.forward import run_prompt
from disagg_worker.kv import KVEntry, tensors_nbytes
from disagg_worker.sampling import SamplingParams

GREEDY = SamplingParams()


class Collector:
    """on_event callback that records every event of one request."""

    def __init__(self) -> None:
        self.events: list[tuple[list[int], str | None]] = []
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.done = threading.Event()

    def __call__(self, token_ids: list[int], finish_reason: str | None) -> None:
        self.events.append((list(token_ids), finish_reason))
        self.tokens.extend(token_ids)
        if finish_reason is not None:
            self.finish_reason = finish_reason
            self.done.set()

    def wait(self) -> list[int]:
        assert self.done.wait(timeout=60), "request did not finish within 60 s"
        return self.tokens


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


class FailingModel:
    """Wraps a model so forwards with `fail` set raise RuntimeError."""

    def __init__(self, model) -> None:
        self.model = model
        self.fail = False

    def __call__(self, **kwargs):
        if self.fail:
            raise RuntimeError("simulated forward failure")
        return self.model(**kwargs)


def greedy_reference(loaded, prompt_ids: list[int], count: int) -> list[int]:
    """Generate `count` greedy tokens for one sequence with a plain cache, no engine."""
    logits, cache = run_prompt(loaded, prompt_ids)
    tokens = [int(torch.argmax(logits))]
    with torch.inference_mode():
        while len(tokens) < count:
            output = loaded.model(
                input_ids=torch.tensor([[tokens[-1]]]), cache=cache, use_cache=True
            )
            cache = output.cache
            tokens.append(int(torch.argmax(output.logits[0, -1])))
    return tokens


def prefill_entry(loaded, request_id: str, prompt_ids: list[int]) -> KVEntry:
    engine = PrefillEngine(loaded, max_queue=1)
    try:
        result = engine.submit(request_id, prompt_ids, GREEDY).result(timeout=30)
    finally:
        engine.close()
    return KVEntry(
        request_id,
        prompt_ids,
        result.first_token_id,
        result.tensors,
        tensors_nbytes(result.tensors),
    )


@pytest.fixture
def engine(tiny_model):
    engine = DecodeEngine(tiny_model, max_queue=16, max_batch=8)
    yield engine
    engine.close()


def test_local_prefill_emits_every_token(tiny_model, engine):
    prompt = [5, 6, 7, 8, 9]
    collector = Collector()
    engine.submit(DecodeRequest("r1", 6, GREEDY, ignore_eos=True, prompt_ids=prompt), collector)
    assert collector.wait() == greedy_reference(tiny_model, prompt, 6)
    assert collector.finish_reason == "length"
    assert engine.prompt_tokens_total == 5
    assert engine.generation_tokens_total == 6


def test_remote_kv_skips_first_token(tiny_model, engine):
    prompt = [5, 6, 7, 8, 9]
    entry = prefill_entry(tiny_model, "r1", prompt)
    collector = Collector()
    engine.submit(DecodeRequest("r1", 6, GREEDY, ignore_eos=True, kv=entry), collector)
    reference = greedy_reference(tiny_model, prompt, 6)
    assert entry.first_token_id == reference[0]
    assert collector.wait() == reference[1:]
    assert engine.prompt_tokens_total == 0
    assert engine.generation_tokens_total == 5


def test_remote_kv_single_token_ends(tiny_model, engine):
    entry = prefill_entry(tiny_model, "r1", [5, 6, 7])
    collector = Collector()
    engine.submit(DecodeRequest("r1", 1, GREEDY, kv=entry), collector)
    assert collector.wait() == []
    assert collector.finish_reason == "length"


def test_eos_token_stops_with_stop(tiny_model):
    prompt = [21, 22, 23]
    reference = greedy_reference(tiny_model, prompt, 8)
    eos = reference[3]
    stop_at = reference.index(eos)
    loaded = dataclasses.replace(tiny_model, eos_token_ids=frozenset({eos}))
    engine = DecodeEngine(loaded, max_queue=4, max_batch=4)
    try:
        collector = Collector()
        engine.submit(DecodeRequest("r1", 8, GREEDY, prompt_ids=prompt), collector)
        assert collector.wait() == reference[: stop_at + 1]
        assert collector.finish_reason == "stop"
    finally:
        engine.close()


def test_ignore_eos_runs_to_max_tokens(tiny_model):
    prompt = [21, 22, 23]
    reference = greedy_reference(tiny_model, prompt, 8)
    loaded = dataclasses.replace(tiny_model, eos_token_ids=frozenset({reference[3]}))
    engine = DecodeEngine(loaded, max_queue=4, max_batch=4)
    try:
        collector = Collector()
        engine.submit(DecodeRequest("r1", 8, GREEDY, ignore_eos=True, prompt_ids=prompt), collector)
        assert collector.wait() == reference
        assert collector.finish_reason == "length"
    finally:
        engine.close()


def test_context_limit_stops_with_length(tiny_model):
    prompt = [5, 6, 7, 8]
    # Prompt and generated tokens together may fill the context, no more.
    loaded = dataclasses.replace(tiny_model, max_context=len(prompt) + 3)
    engine = DecodeEngine(loaded, max_queue=4, max_batch=4)
    try:
        collector = Collector()
        engine.submit(
            DecodeRequest("r1", 50, GREEDY, ignore_eos=True, prompt_ids=prompt), collector
        )
        assert len(collector.wait()) == 3
        assert collector.finish_reason == "length"
    finally:
        engine.close()


def test_requests_of_different_lengths_batch_together(tiny_model, engine):
    prompts = [[7] * length for length in (1, 3, 9, 17)]
    prompts = [[token + index for index, token in enumerate(prompt)] for prompt in prompts]
    collectors = [Collector() for _ in prompts]
    for index, (prompt, collector) in enumerate(zip(prompts, collectors, strict=True)):
        engine.submit(
            DecodeRequest(f"r{index}", 10, GREEDY, ignore_eos=True, prompt_ids=prompt), collector
        )
    for prompt, collector in zip(prompts, collectors, strict=True):
        assert collector.wait() == greedy_reference(tiny_model, prompt, 10)
    # Fewer forwards than rows advanced means rows shared forwards.
    assert engine.batched_rows_total > engine.steps_total


def test_request_joining_mid_flight_matches_alone(tiny_model, engine):
    long_prompt = list(range(100, 130))
    short_prompt = [40, 41]
    first, second = Collector(), Collector()
    started = threading.Event()

    def on_first(token_ids, finish_reason):
        first(token_ids, finish_reason)
        if len(first.tokens) >= 4:
            started.set()

    engine.submit(
        DecodeRequest("a", 24, GREEDY, ignore_eos=True, prompt_ids=short_prompt), on_first
    )
    assert started.wait(timeout=30)
    engine.submit(DecodeRequest("b", 12, GREEDY, ignore_eos=True, prompt_ids=long_prompt), second)
    assert second.wait() == greedy_reference(tiny_model, long_prompt, 12)
    assert first.wait() == greedy_reference(tiny_model, short_prompt, 24)


def test_remote_and_local_requests_share_batch(tiny_model, engine):
    remote_prompt, local_prompt = [50, 51, 52, 53, 54, 55], [60, 61]
    entry = prefill_entry(tiny_model, "remote", remote_prompt)
    remote, local = Collector(), Collector()
    engine.submit(DecodeRequest("remote", 9, GREEDY, ignore_eos=True, kv=entry), remote)
    engine.submit(
        DecodeRequest("local", 9, GREEDY, ignore_eos=True, prompt_ids=local_prompt), local
    )
    assert remote.wait() == greedy_reference(tiny_model, remote_prompt, 9)[1:]
    assert local.wait() == greedy_reference(tiny_model, local_prompt, 9)


def test_cancel_frees_slot(tiny_model, engine):
    collector = Collector()

    def on_event(token_ids, finish_reason):
        collector(token_ids, finish_reason)
        if len(collector.tokens) == 3 and finish_reason is None:
            engine.cancel("r1")

    engine.submit(DecodeRequest("r1", 200, GREEDY, ignore_eos=True, prompt_ids=[5, 6]), on_event)
    assert len(collector.wait()) == 3
    assert collector.finish_reason == "cancelled"
    assert engine.inflight == 0


def test_cancel_unknown_request_returns_false(engine):
    assert not engine.cancel("nobody")


def test_queue_full_raises_at_once(tiny_model):
    gated = GatedModel(tiny_model.model)
    engine = DecodeEngine(dataclasses.replace(tiny_model, model=gated), max_queue=2, max_batch=1)
    try:
        collectors = [Collector() for _ in range(3)]
        engine.submit(DecodeRequest("r0", 2, GREEDY, prompt_ids=[5]), collectors[0])
        assert gated.entered.wait(timeout=30)
        engine.submit(DecodeRequest("r1", 2, GREEDY, prompt_ids=[5]), collectors[1])
        engine.submit(DecodeRequest("r2", 2, GREEDY, prompt_ids=[5]), collectors[2])
        assert engine.queue_depth == 2
        assert engine.inflight == 1
        with pytest.raises(QueueFull, match="request_id=r3"):
            engine.submit(DecodeRequest("r3", 2, GREEDY, prompt_ids=[5]), Collector())
        gated.gate.set()
        for collector in collectors:
            collector.wait()
        assert engine.queue_depth == 0
        assert engine.inflight == 0
    finally:
        gated.gate.set()
        engine.close()


def test_waiting_beyond_max_batch_joins_later(tiny_model):
    engine = DecodeEngine(tiny_model, max_queue=8, max_batch=2)
    try:
        prompts = [[30 + index, 31 + index] for index in range(5)]
        collectors = [Collector() for _ in prompts]
        for index, (prompt, collector) in enumerate(zip(prompts, collectors, strict=True)):
            engine.submit(
                DecodeRequest(f"r{index}", 5, GREEDY, ignore_eos=True, prompt_ids=prompt),
                collector,
            )
        for prompt, collector in zip(prompts, collectors, strict=True):
            assert collector.wait() == greedy_reference(tiny_model, prompt, 5)
    finally:
        engine.close()


def test_forward_failure_ends_running_with_error(tiny_model):
    failing = FailingModel(tiny_model.model)
    engine = DecodeEngine(dataclasses.replace(tiny_model, model=failing), max_queue=4, max_batch=4)
    try:
        collector = Collector()

        def on_event(token_ids, finish_reason):
            collector(token_ids, finish_reason)
            failing.fail = True

        engine.submit(DecodeRequest("r1", 10, GREEDY, ignore_eos=True, prompt_ids=[5]), on_event)
        collector.wait()
        assert collector.finish_reason == "error"
        failing.fail = False
        after = Collector()
        engine.submit(DecodeRequest("r2", 3, GREEDY, ignore_eos=True, prompt_ids=[5]), after)
        assert after.wait() == greedy_reference(tiny_model, [5], 3)
    finally:
        engine.close()


def test_drain_finishes_inflight_then_rejects(tiny_model):
    engine = DecodeEngine(tiny_model, max_queue=4, max_batch=4)
    collector = Collector()
    engine.submit(DecodeRequest("r1", 12, GREEDY, ignore_eos=True, prompt_ids=[5, 6]), collector)
    assert engine.drain(timeout=60)
    assert len(collector.tokens) == 12
    assert collector.finish_reason == "length"
    with pytest.raises(Draining):
        engine.submit(DecodeRequest("r2", 2, GREEDY, prompt_ids=[5]), Collector())


def test_close_cancels_active_requests(tiny_model):
    gated = GatedModel(tiny_model.model)
    engine = DecodeEngine(dataclasses.replace(tiny_model, model=gated), max_queue=4, max_batch=1)
    running, waiting = Collector(), Collector()
    engine.submit(DecodeRequest("r1", 50, GREEDY, ignore_eos=True, prompt_ids=[5]), running)
    assert gated.entered.wait(timeout=30)
    engine.submit(DecodeRequest("r2", 50, GREEDY, ignore_eos=True, prompt_ids=[6]), waiting)
    closer = threading.Thread(target=engine.close)
    closer.start()
    deadline = time.monotonic() + 30
    while not engine.draining and time.monotonic() < deadline:
        time.sleep(0.01)
    gated.gate.set()
    closer.join(timeout=30)
    running.wait()
    waiting.wait()
    assert running.finish_reason == "cancelled"
    assert waiting.finish_reason == "cancelled"
    assert waiting.tokens == []
    assert engine.inflight == 0
    assert engine.queue_depth == 0


def test_both_sources_raise(tiny_model, engine):
    entry = prefill_entry(tiny_model, "r1", [5, 6])
    with pytest.raises(ValueError, match="exactly one"):
        engine.submit(DecodeRequest("r1", 4, GREEDY, prompt_ids=[5, 6], kv=entry), Collector())


def test_zero_max_tokens_raises(engine):
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit(DecodeRequest("r1", 0, GREEDY, prompt_ids=[5]), Collector())


def test_kv_of_wrong_shape_raises(tiny_model, engine):
    entry = prefill_entry(tiny_model, "r1", [5, 6, 7])
    entry.prompt_token_ids = [5, 6]
    with pytest.raises(ValueError, match="shape"):
        engine.submit(DecodeRequest("r1", 4, GREEDY, kv=entry), Collector())


def test_duplicate_active_id_raises(tiny_model):
    gated = GatedModel(tiny_model.model)
    engine = DecodeEngine(dataclasses.replace(tiny_model, model=gated), max_queue=4, max_batch=4)
    try:
        engine.submit(DecodeRequest("r1", 2, GREEDY, prompt_ids=[5]), Collector())
        with pytest.raises(ValueError, match="already running"):
            engine.submit(DecodeRequest("r1", 2, GREEDY, prompt_ids=[5]), Collector())
    finally:
        gated.gate.set()
        engine.close()


def test_rows_leaving_at_different_steps_stay_exact(tiny_model, engine):
    cases = [([70, 71, 72], 3), ([80] * 11, 7), ([90, 91], 12), (list(range(1, 20)), 5)]
    collectors = [Collector() for _ in cases]
    for index, ((prompt, max_tokens), collector) in enumerate(zip(cases, collectors, strict=True)):
        engine.submit(
            DecodeRequest(f"r{index}", max_tokens, GREEDY, ignore_eos=True, prompt_ids=prompt),
            collector,
        )
    for (prompt, max_tokens), collector in zip(cases, collectors, strict=True):
        assert collector.wait() == greedy_reference(tiny_model, prompt, max_tokens)


def test_raising_callback_cancels_its_request(tiny_model, engine):
    events: list[str | None] = []
    finished = threading.Event()

    def on_event(token_ids, finish_reason):
        events.append(finish_reason)
        if finish_reason is None:
            raise RuntimeError("consumer failed")
        finished.set()

    engine.submit(DecodeRequest("r1", 50, GREEDY, ignore_eos=True, prompt_ids=[5]), on_event)
    after = Collector()
    engine.submit(DecodeRequest("r2", 3, GREEDY, ignore_eos=True, prompt_ids=[6]), after)
    assert after.wait() == greedy_reference(tiny_model, [6], 3)
    assert finished.wait(timeout=30)
    assert events[-1] == "cancelled"
    assert len(events) < 50
