"""Remote prefill on the real model continues exactly like transformers' generate.

Path under test: PrefillEngine -> cache_to_tensors -> bytes -> tensors ->
KVEntry -> DecodeEngine, greedy, against model.generate(do_sample=False).
"""

from __future__ import annotations

import threading

import pytest
import torch
from disagg_worker.engine import DecodeEngine, DecodeRequest, PrefillEngine
from disagg_worker.kv import KVEntry, tensors_from_bytes, tensors_to_bytes
from disagg_worker.sampling import SamplingParams

MAX_TOKENS = 16
# Default chunk size of the KV transfer; the long prompt's KV must span several chunks.
CHUNK_BYTES = 1 << 20

LONG_TEXT = (
    "Disaggregated serving runs prefill and decode in separate pools. Prefill processes the "
    "whole prompt at once and is limited by compute, while decode produces one token per step "
    "and is limited by memory bandwidth. Explain in two sentences why separating them helps."
)


def chat_prompt(tokenizer, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference(loaded, prompt_ids: list[int]) -> list[int]:
    input_ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
        )
    return output[0, len(prompt_ids) :].tolist()


def remote_generate(loaded, prompt_ids: list[int]) -> tuple[list[int], int]:
    """Return (all tokens, KV payload bytes) through the prefill and decode engines."""
    prefill = PrefillEngine(loaded, max_queue=1)
    decode = DecodeEngine(loaded, max_queue=1, max_batch=1)
    try:
        result = prefill.submit("identity", prompt_ids, SamplingParams()).result(timeout=120)
        payload = tensors_to_bytes(result.tensors)
        shapes = [tuple(tensor.shape) for tensor in result.tensors]
        tensors = tensors_from_bytes(payload, shapes, loaded.dtype)
        entry = KVEntry("identity", prompt_ids, result.first_token_id, tensors, len(payload))

        tokens = [result.first_token_id]
        done = threading.Event()

        def on_event(token_ids, finish_reason):
            tokens.extend(token_ids)
            if finish_reason is not None:
                done.set()

        decode.submit(DecodeRequest("identity", MAX_TOKENS, SamplingParams(), kv=entry), on_event)
        assert done.wait(timeout=120), "decode did not finish within 120 s"
    finally:
        prefill.close()
        decode.close()
    return tokens, len(payload)


@pytest.mark.model
def test_one_token_prompt(smollm2):
    prompt = smollm2.tokenizer("Hello")["input_ids"]
    assert len(prompt) == 1
    tokens, _ = remote_generate(smollm2, prompt)
    assert tokens == reference(smollm2, prompt)


@pytest.mark.model
def test_few_token_prompt(smollm2):
    prompt = smollm2.tokenizer("The capital of France is")["input_ids"]
    assert 2 <= len(prompt) <= 8
    tokens, _ = remote_generate(smollm2, prompt)
    assert tokens == reference(smollm2, prompt)


@pytest.mark.model
def test_prompt_longer_than_one_chunk(smollm2):
    prompt = chat_prompt(smollm2.tokenizer, LONG_TEXT)
    assert len(prompt) >= 60
    tokens, payload_bytes = remote_generate(smollm2, prompt)
    assert payload_bytes > CHUNK_BYTES
    assert tokens == reference(smollm2, prompt)
