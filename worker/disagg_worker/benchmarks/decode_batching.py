"""Decode throughput of one DecodeEngine at N concurrent requests against 1, in one run.

Steps:
1. Load the model and prefill every prompt once with a PrefillEngine, so
   both phases decode from the same KV caches (remote-prefill requests) and
   measure decode only.
2. Concurrency 1: submit the first --single-requests requests one after
   another, each alone in the engine: half before step 3, half after it.
3. Concurrency N: submit all --concurrency requests at once.
Tokens/s counts the tokens the decode engine emitted (the first token of
each request came from the prefill) over the wall time of the phase. The
process CPU time of each phase is reported too: on a machine shared with
other work, the CPU-time ratio varies less than the wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

HELP = "decode tokens/s of one decode engine at N concurrent requests against 1"

# Prompt text, repeated and cut to each request's prompt length.
PROMPT_TEXT = (
    "Disaggregated serving splits prefill and decode into separate pools so that long "
    "prompts do not stall running streams, and each pool scales on its own queue depth. "
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2', a save_pretrained folder, or a Hugging Face model id (default: smollm2)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        help="requests decoded together in the batched phase (default: %(default)s)",
    )
    parser.add_argument(
        "--single-requests",
        type=_positive_int,
        default=4,
        help="requests decoded one at a time in the concurrency-1 phase (default: %(default)s)",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=32,
        help="tokens per request, the prefilled first one included (default: %(default)s)",
    )
    parser.add_argument(
        "--min-prompt-tokens",
        type=_positive_int,
        default=16,
        help="minimum prompt length in tokens; the others spread evenly up to the maximum "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=_positive_int,
        default=96,
        help="maximum prompt length in tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch intra-op threads (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: argparse.Namespace) -> int:
    import torch

    from disagg_worker.cli import CommandError

    if args.min_prompt_tokens > args.max_prompt_tokens:
        raise CommandError(
            f"--min-prompt-tokens {args.min_prompt_tokens} is above --max-prompt-tokens "
            f"{args.max_prompt_tokens}; swap them"
        )
    if args.max_tokens < 2:
        raise CommandError(
            f"--max-tokens {args.max_tokens} leaves nothing to decode after the prefilled "
            "first token; use at least 2"
        )
    # The thread count is process-wide; restore it for callers that run in-process.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        figures = measure(args)
    finally:
        torch.set_num_threads(previous_threads)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 0


def measure(args: argparse.Namespace) -> dict:
    """Run both phases and return the figures."""
    from disagg_worker.cli import CommandError
    from disagg_worker.model import ModelLoadError, load_model

    _progress(f"loading model {args.model}")
    try:
        loaded = load_model(args.model)
    except ModelLoadError as error:
        raise CommandError(str(error)) from error

    requests = max(args.concurrency, args.single_requests)
    prompts = _prompts(loaded.tokenizer, requests, args.min_prompt_tokens, args.max_prompt_tokens)
    entries = _prefill_all(loaded, prompts)

    # A short warm-up keeps one-time allocations out of the first phase.
    _decode_together(loaded, entries[:1], max_tokens=4)

    # Half the concurrency-1 requests run before the batched phase and half
    # after it, so load from other processes that drifts during the run
    # weighs on both phases alike.
    singles = entries[: args.single_requests]
    middle = (len(singles) + 1) // 2
    first_half = _decode_one_by_one(loaded, singles[:middle], args.max_tokens, 0, len(singles))

    _progress(f"concurrency {args.concurrency}: {args.concurrency} requests together")
    cpu_started = time.process_time()
    batch_tokens, batch_seconds, mean_batch = _decode_together(
        loaded, entries[: args.concurrency], args.max_tokens
    )
    batch_cpu_seconds = time.process_time() - cpu_started

    second_half = _decode_one_by_one(
        loaded, singles[middle:], args.max_tokens, middle, len(singles)
    )
    single_tokens, single_seconds, single_cpu_seconds = (
        first + second for first, second in zip(first_half, second_half, strict=True)
    )

    single_rate = single_tokens / single_seconds
    batch_rate = batch_tokens / batch_seconds
    cpu_ratio = (batch_tokens / batch_cpu_seconds) / (single_tokens / single_cpu_seconds)
    figures = {
        "model": loaded.name,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "prompt_tokens": [len(prompt) for prompt in prompts],
        "tokens_1": single_tokens,
        "seconds_1": round(single_seconds, 3),
        "tokens_per_s_1": round(single_rate, 2),
        f"tokens_{args.concurrency}": batch_tokens,
        f"seconds_{args.concurrency}": round(batch_seconds, 3),
        f"tokens_per_s_{args.concurrency}": round(batch_rate, 2),
        f"mean_batch_{args.concurrency}": round(mean_batch, 2),
        "ratio": round(batch_rate / single_rate, 2),
        "cpu_seconds_1": round(single_cpu_seconds, 3),
        f"cpu_seconds_{args.concurrency}": round(batch_cpu_seconds, 3),
        "cpu_time_ratio": round(cpu_ratio, 2),
    }
    return figures


def _progress(message: str) -> None:
    print(f"decode-batching: {message}", file=sys.stderr, flush=True)


def _prompts(tokenizer, count: int, shortest: int, longest: int) -> list[list[int]]:
    base = tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
    prompts = []
    for index in range(count):
        # Lengths spread evenly from shortest to longest.
        length = shortest + (longest - shortest) * index // max(1, count - 1)
        repeated = base * (length // len(base) + 1)
        # A different first token per request keeps the prompts distinct.
        prompts.append([base[index % len(base)], *repeated[: length - 1]])
    return prompts


def _prefill_all(loaded, prompts: list[list[int]]):
    from disagg_worker.engine import PrefillEngine
    from disagg_worker.kv import KVEntry
    from disagg_worker.sampling import SamplingParams

    engine = PrefillEngine(loaded, max_queue=len(prompts))
    entries = []
    try:
        for index, prompt in enumerate(prompts):
            _progress(f"prefill {index + 1}/{len(prompts)} ({len(prompt)} tokens)")
            result = engine.submit(f"bench-{index}", prompt, SamplingParams()).result()
            entries.append(
                KVEntry(
                    f"bench-{index}", prompt, result.first_token_id, result.tensors, result.nbytes
                )
            )
    finally:
        engine.close()
    return entries


def _decode_one_by_one(
    loaded, entries, max_tokens: int, done: int, total: int
) -> tuple[int, float, float]:
    """Decode `entries` one at a time; return (tokens, wall seconds, CPU seconds)."""
    tokens, seconds, cpu_seconds = 0, 0.0, 0.0
    for index, entry in enumerate(entries):
        _progress(f"concurrency 1: request {done + index + 1}/{total}")
        cpu_started = time.process_time()
        emitted, elapsed, _ = _decode_together(loaded, [entry], max_tokens)
        cpu_seconds += time.process_time() - cpu_started
        tokens += emitted
        seconds += elapsed
    return tokens, seconds, cpu_seconds


def _decode_together(loaded, entries, max_tokens: int) -> tuple[int, float, float]:
    """Decode `entries` submitted at once to one engine; return (tokens, seconds, mean batch)."""
    from disagg_worker.engine import DecodeEngine, DecodeRequest

    engine = DecodeEngine(loaded, max_queue=len(entries), max_batch=len(entries))
    lock = threading.Lock()
    emitted = 0
    remaining = len(entries)
    finished = threading.Event()

    def on_event(token_ids: list[int], finish_reason: str | None) -> None:
        nonlocal emitted, remaining
        with lock:
            emitted += len(token_ids)
            if finish_reason is not None:
                remaining -= 1
                if remaining == 0:
                    finished.set()

    try:
        started = time.perf_counter()
        for entry in entries:
            engine.submit(
                DecodeRequest(entry.request_id, max_tokens, ignore_eos=True, kv=entry), on_event
            )
        finished.wait()
        seconds = time.perf_counter() - started
        mean_batch = engine.batched_rows_total / max(1, engine.steps_total)
    finally:
        engine.close()
    return emitted, seconds, mean_batch
