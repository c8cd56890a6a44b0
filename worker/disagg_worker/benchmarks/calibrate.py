"""Measure this machine's workers and write the calibration JSON that `disagg simulate` reads.

Steps:
1. Load --model as a worker does (`disagg_worker.model.load_model`, float32
   on CPU) and measure, with `disagg_operator.simulate.calibrate.measure_model`,
   prefill tokens/s for one --prefill-tokens prompt, the decode step time
   at batch sizes 1 to 32 over a --kv-tokens cache, and the KV bytes per token.
2. Start `disagg worker prefill --model M` --startup-repeats times, each a
   fresh process, and time it from spawn until its /health/ready returns
   200: imports, model load and gRPC start, the replica start-up that
   `disagg serve` waits for. The median is recorded.
3. Write the file in the format of `disagg_operator.simulate.calibration`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP = "measure this machine's workers and write the calibration JSON of disagg simulate"

logger = logging.getLogger(__name__)

# Seconds between two readiness probes of a starting worker.
PROBE_INTERVAL_S = 0.1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("calibration.json"),
        help="JSON file to write (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2', a save_pretrained folder, or a Hugging Face model id (default: smollm2)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads of the measurement and of each started worker (default: 1)",
    )
    parser.add_argument(
        "--prefill-tokens",
        type=_positive_int,
        default=512,
        help="prompt length of the prefill measurement, tokens (default: %(default)s)",
    )
    parser.add_argument(
        "--kv-tokens",
        type=_positive_int,
        default=500,
        help="KV cache length per sequence in the decode measurement (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=5,
        help="decode steps timed per batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-repeats",
        type=_positive_int,
        default=2,
        help="worker processes started to time the start-up (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=_positive_float,
        default=300.0,
        help="seconds one worker may take to become ready (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=_positive_int,
        default=32,
        help="max running requests per decode replica, recorded as given (default: %(default)s)",
    )
    parser.add_argument(
        "--kv-transfer-bytes-per-second",
        type=_positive_float,
        default=1.0e9,
        help="KV transfer rate to record, bytes/s (default 1e9, measured for Python gRPC on "
        "loopback with 1 MiB messages)",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from disagg_operator.simulate.calibrate import (
        DEFAULT_BATCH_SIZES,
        build_calibration,
        measure_model,
    )

    from disagg_worker.cli import CommandError
    from disagg_worker.model import ModelLoadError, load_model

    # 1. The model as a worker loads it, measured in this process.
    _progress(f"loading model {args.model}")
    try:
        loaded = load_model(args.model, dtype="float32", device="cpu")
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    longest = max(args.prefill_tokens, args.kv_tokens + args.steps + 1)
    if longest > loaded.max_context:
        raise CommandError(
            f"--prefill-tokens {args.prefill_tokens} or --kv-tokens {args.kv_tokens} plus "
            f"--steps exceeds the context of model {loaded.name} ({loaded.max_context} tokens); "
            "lower them"
        )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _progress(
            f"measuring prefill ({args.prefill_tokens} tokens) and decode steps at batch "
            f"sizes {', '.join(map(str, DEFAULT_BATCH_SIZES))}"
        )
        measured = measure_model(
            args.prefill_tokens, args.kv_tokens, DEFAULT_BATCH_SIZES, args.steps, loaded.model
        )
    finally:
        torch.set_num_threads(previous_threads)

    # 2. Fresh worker processes, timed until ready.
    samples = []
    for repeat in range(args.startup_repeats):
        _progress(f"starting worker {repeat + 1}/{args.startup_repeats}")
        samples.append(measure_worker_startup(args.model, args.threads, args.startup_timeout))
    startup = statistics.median(samples)

    # 3. The file.
    calibration = build_calibration(
        measured,
        startup,
        source=(
            f"measured by disagg bench calibrate: {loaded.name} fp32, transformers forward "
            "passes, start-up of `disagg worker prefill` until ready"
        ),
        command=_command_line(args),
        threads=args.threads,
        max_batch=args.max_batch,
        kv_transfer_bytes_per_second=args.kv_transfer_bytes_per_second,
    )
    try:
        args.output.write_text(json.dumps(calibration, indent=2) + "\n")
    except OSError as error:
        raise CommandError(f"cannot write {args.output}: {error}") from error
    print(
        f"calibrate: prefill {calibration['prefill_tokens_per_second']} tokens/s, decode step "
        f"{calibration['decode_step_seconds'][0][1]} s at batch 1, start-up "
        f"{calibration['startup_seconds']} s; written to {args.output}"
    )
    return 0


def measure_worker_startup(model: str, threads: int, timeout_s: float) -> float:
    """Return the seconds a fresh `disagg worker prefill` process takes to become ready."""
    from disagg_worker.cli import CommandError
    from disagg_worker.serve import disagg_command, free_port, http_ok

    host = "127.0.0.1"
    metrics_port = free_port(host)
    argv = [
        *disagg_command(),
        "worker",
        "prefill",
        "--model",
        model,
        "--host",
        host,
        "--grpc-port",
        "0",
        "--metrics-port",
        str(metrics_port),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ready_url = f"http://{host}:{metrics_port}/health/ready"
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        try:
            while not http_ok(ready_url, timeout_s=1.0):
                if process.poll() is not None:
                    log.seek(0)
                    tail = "\n".join(log.read().splitlines()[-10:])
                    raise CommandError(
                        f"worker exited with code {process.returncode} before it was ready:\n{tail}"
                    )
                if time.perf_counter() - started > timeout_s:
                    raise CommandError(
                        f"worker not ready after {timeout_s:.0f} s; raise --startup-timeout"
                    )
                time.sleep(PROBE_INTERVAL_S)
            seconds = time.perf_counter() - started
        finally:
            _stop(process)
    logger.info("worker ready model=%s seconds=%.2f", model, seconds)
    return seconds


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _command_line(args: argparse.Namespace) -> str:
    """Return the command that repeats this measurement, every option spelled out."""
    options = [
        ("--model", args.model),
        ("--threads", args.threads),
        ("--prefill-tokens", args.prefill_tokens),
        ("--kv-tokens", args.kv_tokens),
        ("--steps", args.steps),
        ("--startup-repeats", args.startup_repeats),
        ("--max-batch", args.max_batch),
        ("--kv-transfer-bytes-per-second", f"{args.kv_transfer_bytes_per_second:g}"),
        ("--output", args.output),
    ]
    return "disagg bench calibrate " + " ".join(f"{name} {value}" for name, value in options)


def _progress(message: str) -> None:
    print(f"calibrate: {message}", file=sys.stderr, flush=True)
