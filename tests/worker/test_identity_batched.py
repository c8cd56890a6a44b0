"""Eight requests batched in one DecodeEngine each get the tokens they get alone.

Batched forwards add padding and change matrix shapes, so float sums may
round differently. A divergence is accepted only at a near-tie, where the
reference's two top logits differ by less than 1e-3 relative. The test then
prints how many tokens matched before it.
"""

from __future__ import annotations

import threading

import pytest
import torch
from disagg_worker.engine import DecodeEngine, DecodeRequest, PrefillEngine
from disagg_worker.kv import KVEntry, tensors_nbytes
from disagg_worker.sampling import SamplingParams

MAX_TOKENS = 12
NEAR_TIE = 1e-3
TEXTS = [
    "Hi",
    "Name a color.",
    "What is the boiling point of water at sea level?",
    "Write a haiku about autumn leaves falling on a quiet river.",
    "List three reasons why people enjoy hiking in the mountains during the summer months.",
    "Summarize the plot of a story where a young inventor builds a robot that learns to paint "
    "landscapes and eventually wins a competition.",
    "Explain how a refrigerator keeps food cold, covering the compressor, the condenser, the "
    "expansion valve and the evaporator, in simple words a child could follow.",
    "You are a helpful assistant. A user asks how to plan a three day trip to a city they have "
    "never visited, with a small budget, using public transport, and visiting museums, parks "
    "and local markets. Give a short plan.",
]


def alone(loaded, prompt_ids: list[int]) -> tuple[list[int], list[float]]:
    """Greedy tokens of one sequence and the relative gap of its two top logits per token."""
    input_ids = torch.tensor([prompt_ids])
    tokens: list[int] = []
    gaps: list[float] = []
    cache = None
    with torch.inference_mode():
        while len(tokens) < MAX_TOKENS:
            output = loaded.model(input_ids=input_ids, cache=cache, use_cache=True)
            cache = output.cache
            top = torch.topk(output.logits[0, -1].float(), 2).values
            gaps.append(float((top[0] - top[1]) / top[0].abs()))
            tokens.append(int(torch.argmax(output.logits[0, -1])))
            input_ids = torch.tensor([[tokens[-1]]])
    return tokens, gaps


@pytest.mark.model
def test_eight_batched_requests_match_alone(smollm2):
    tokenizer = smollm2.tokenizer
    prompts = [tokenizer(text)["input_ids"] for text in TEXTS]
    assert len({len(prompt) for prompt in prompts}) == len(prompts)

    # Half the requests bring KV from a prefill engine, half prefill locally.
    prefill = PrefillEngine(smollm2, max_queue=8)
    decode = DecodeEngine(smollm2, max_queue=8, max_batch=8)
    outputs: list[list[int]] = [[] for _ in prompts]
    finished = [threading.Event() for _ in prompts]
    try:
        requests = []
        for index, prompt in enumerate(prompts):
            request_id = f"r{index}"
            if index % 2:
                result = prefill.submit(request_id, prompt, SamplingParams()).result(timeout=120)
                outputs[index].append(result.first_token_id)
                entry = KVEntry(
                    request_id,
                    prompt,
                    result.first_token_id,
                    result.tensors,
                    tensors_nbytes(result.tensors),
                )
                requests.append(DecodeRequest(request_id, MAX_TOKENS, ignore_eos=True, kv=entry))
            else:
                requests.append(
                    DecodeRequest(request_id, MAX_TOKENS, ignore_eos=True, prompt_ids=prompt)
                )

        def collector(index: int):
            def on_event(token_ids, finish_reason):
                outputs[index].extend(token_ids)
                if finish_reason is not None:
                    finished[index].set()

            return on_event

        for index, request in enumerate(requests):
            decode.submit(request, collector(index))
        for index, event in enumerate(finished):
            assert event.wait(timeout=300), f"request r{index} did not finish"
        mean_batch = decode.batched_rows_total / decode.steps_total
    finally:
        prefill.close()
        decode.close()

    assert mean_batch > 4, f"mean batch size {mean_batch:.1f}: the requests did not share steps"
    for index, prompt in enumerate(prompts):
        expected, gaps = alone(smollm2, prompt)
        got = outputs[index]
        assert len(got) == MAX_TOKENS
        matched = next(
            (
                position
                for position, pair in enumerate(zip(got, expected, strict=True))
                if pair[0] != pair[1]
            ),
            MAX_TOKENS,
        )
        if matched < MAX_TOKENS:
            print(f"r{index}: {matched} tokens matched before a near-tie (gap {gaps[matched]:.2e})")
            assert gaps[matched] < NEAR_TIE, (
                f"r{index} ({len(prompt)} prompt tokens) diverged at token {matched} where the "
                f"reference's top logits differ by {gaps[matched]:.2e} relative"
            )
