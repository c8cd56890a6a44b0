"""Model calls and request checks shared by the prefill and decode engines."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from disagg_worker.model import LoadedModel


def check_prompt(loaded: LoadedModel, request_id: str, prompt_ids: Sequence[int]) -> list[int]:
    """Return the prompt as a list of ints; raise ValueError when it cannot run."""
    ids = [int(token) for token in prompt_ids]
    if not ids:
        raise ValueError(f"request_id={request_id}: prompt_ids is empty; send at least one token")
    if len(ids) >= loaded.max_context:
        raise ValueError(
            f"request_id={request_id}: prompt has {len(ids)} tokens, the model's context is "
            f"{loaded.max_context}; shorten the prompt so at least one token can be generated"
        )
    bad = [token for token in ids if not 0 <= token < loaded.vocab_size]
    if bad:
        raise ValueError(
            f"request_id={request_id}: token id {bad[0]} is outside the vocabulary "
            f"[0, {loaded.vocab_size}); tokenize with the model's tokenizer"
        )
    return ids


def run_prompt(loaded: LoadedModel, prompt_ids: Sequence[int]) -> tuple[torch.Tensor, DynamicCache]:
    """Run a whole prompt as one sequence; return the last position's logits and the cache."""
    input_ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=loaded.device)
    with torch.inference_mode():
        output = loaded.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return output.logits[0, -1, :], output.cache
