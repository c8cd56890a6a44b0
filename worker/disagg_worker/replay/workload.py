"""Turn a trace into the requests a replay sends: scaled times, token-id prompts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from disagg_worker.traces import Trace

# Prompt token ids are drawn from this range: ordinary tokens in any
# vocabulary of at least 32k entries, clear of the special tokens that
# tokenizers put at the start of their vocabulary.
TOKEN_ID_LOW = 1000
TOKEN_ID_HIGH = 30000


@dataclass(frozen=True)
class PlannedRequest:
    index: int
    # Seconds after the replay starts.
    send_at_s: float
    prompt_ids: list[int]
    max_tokens: int
    # The prompt was shortened to fit the context with its output.
    clipped: bool


def plan_requests(
    trace: Trace,
    time_scale: float = 1.0,
    token_scale: float = 1.0,
    max_requests: int | None = None,
    duration_s: float | None = None,
    max_context: int = 8192,
    seed: int = 0,
) -> list[PlannedRequest]:
    """Scale the trace: gaps divided by `time_scale`, token counts times `token_scale`.

    Requests arriving after `duration_s` (in scaled time) or beyond
    `max_requests` are left out. A prompt whose scaled length plus output
    exceeds `max_context` is shortened to fit (and marked `clipped`).
    """
    generator = random.Random(seed)
    planned = []
    for index, request in enumerate(trace.requests):
        if max_requests is not None and index >= max_requests:
            break
        send_at_s = request.arrival_s / time_scale
        if duration_s is not None and send_at_s > duration_s:
            break
        output_tokens = max(1, round(request.output_tokens * token_scale))
        output_tokens = min(output_tokens, max_context - 1)
        prompt_tokens = max(1, round(request.prompt_tokens * token_scale))
        clipped = prompt_tokens + output_tokens > max_context
        if clipped:
            prompt_tokens = max_context - output_tokens
        prompt_ids = [
            generator.randrange(TOKEN_ID_LOW, TOKEN_ID_HIGH) for _ in range(prompt_tokens)
        ]
        planned.append(PlannedRequest(index, send_at_s, prompt_ids, output_tokens, clipped))
    return planned
