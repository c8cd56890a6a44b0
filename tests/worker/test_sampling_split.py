"""Seeded sampling gives the same tokens with remote prefill as with local prefill."""

from __future__ import annotations

import threading

from disagg_worker.engine import DecodeEngine, DecodeRequest, PrefillEngine
from disagg_worker.kv import KVEntry, tensors_nbytes
from disagg_worker.sampling import SamplingParams


def generate(engine: DecodeEngine, request: DecodeRequest) -> list[int]:
    tokens: list[int] = []
    done = threading.Event()

    def on_event(token_ids, finish_reason):
        tokens.extend(token_ids)
        if finish_reason is not None:
            done.set()

    engine.submit(request, on_event)
    assert done.wait(timeout=60), f"request_id={request.request_id} did not finish"
    return tokens


def test_seeded_split_equals_local(tiny_model):
    prompt = [15, 16, 17, 18]
    sampling = SamplingParams(temperature=1.0, top_p=0.95, seed=1234)
    prefill = PrefillEngine(tiny_model, max_queue=2)
    decode = DecodeEngine(tiny_model, max_queue=4, max_batch=4)
    try:
        local = generate(
            decode, DecodeRequest("local", 12, sampling, ignore_eos=True, prompt_ids=prompt)
        )
        result = prefill.submit("split", prompt, sampling).result(timeout=30)
        entry = KVEntry(
            "split", prompt, result.first_token_id, result.tensors, tensors_nbytes(result.tensors)
        )
        rest = generate(decode, DecodeRequest("split", 12, sampling, ignore_eos=True, kv=entry))
    finally:
        prefill.close()
        decode.close()
    assert [result.first_token_id, *rest] == local


def test_different_seeds_differ(tiny_model):
    prompt = [15, 16, 17, 18]
    decode = DecodeEngine(tiny_model, max_queue=4, max_batch=4)
    try:
        runs = [
            generate(
                decode,
                DecodeRequest(
                    f"r{seed}",
                    12,
                    SamplingParams(temperature=1.0, seed=seed),
                    ignore_eos=True,
                    prompt_ids=prompt,
                ),
            )
            for seed in (1, 2)
        ]
    finally:
        decode.close()
    assert runs[0] != runs[1]
