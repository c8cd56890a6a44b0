"""`disagg worker prefill|decode|aggregated`: run one worker replica.

The process serves gRPC (Prefill or Decode + KVTransfer, Worker, Health)
on --grpc-port and Prometheus metrics plus the Kubernetes probes on
--metrics-port. SIGTERM drains it: it stops admitting, finishes in-flight
requests for at most --drain-timeout seconds, then exits.
"""

from __future__ import annotations

import argparse

ROLE_CHOICES = ("prefill", "decode", "aggregated")

MIB = 1 << 20


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: use 0 (any free port) to 65535")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {value}: it must be at least 0")
    return value


def register(subparsers) -> None:
    from disagg_worker.server.defaults import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_MESSAGE_BYTES

    parser = subparsers.add_parser(
        "worker",
        help="run a prefill, decode or aggregated worker replica",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("role", choices=ROLE_CHOICES, help="the replica's role")
    parser.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2', a save_pretrained folder, or a Hugging Face model id (default: smollm2)",
    )
    parser.add_argument(
        "--served-model-name",
        help="model name reported by Worker.GetLoad and in metrics (default: from --model)",
    )
    parser.add_argument(
        "--revision",
        help="revision of a Hugging Face model id (branch, tag or commit)",
    )
    parser.add_argument(
        "--dtype",
        help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    parser.add_argument("--cache-dir", help="model cache folder (default: $DISAGG_CACHE_DIR)")
    parser.add_argument(
        "--host", default="0.0.0.0", help="address both servers listen on (default: 0.0.0.0)"
    )
    parser.add_argument(
        "--grpc-port", type=_port, default=50051, help="gRPC port, 0 for any (default: 50051)"
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=9090,
        help="port of /metrics, /health/live and /health/ready, 0 for any (default: 9090)",
    )
    parser.add_argument(
        "--max-queue",
        type=_positive_int,
        default=16,
        help="requests admitted and waiting; more are rejected with RESOURCE_EXHAUSTED "
        "(default: 16)",
    )
    parser.add_argument(
        "--max-batch",
        type=_positive_int,
        default=8,
        help="requests decoded together in one batch (decode, aggregated; default: 8)",
    )
    parser.add_argument(
        "--kv-store-bytes",
        type=_positive_int,
        default=2048 * MIB,
        help="bytes of received KV caches held until claimed (decode, aggregated; default: 2 GiB)",
    )
    parser.add_argument(
        "--kv-ttl-seconds",
        type=float,
        default=60.0,
        help="seconds an unclaimed KV cache is kept (default: 60)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help="largest gRPC message accepted or sent, in bytes "
        f"(default: {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    parser.add_argument(
        "--kv-chunk-bytes",
        type=_positive_int,
        default=DEFAULT_CHUNK_BYTES,
        help=f"payload bytes per KV transfer message (prefill; default: {DEFAULT_CHUNK_BYTES})",
    )
    parser.add_argument(
        "--kv-timeout",
        type=float,
        default=30.0,
        help="seconds a KV transfer may take before the prefill fails (prefill; default: 30)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        help="seconds SIGTERM waits for in-flight requests before exiting (default: 30)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="log lines as plain text or one JSON object a line (default: plain)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from transformers.utils import logging as transformers_logging

    from disagg_worker.cli import CommandError
    from disagg_worker.logs import configure_logging
    from disagg_worker.model import ModelLoadError, check_model_source
    from disagg_worker.server.app import WorkerOptions, serve

    configure_logging(args.log_level, args.log_format)
    if not sys.stderr.isatty():
        # In a log file or under `disagg serve`, transformers' progress bars are
        # carriage-return redraws without the replica prefix; model.py logs the load.
        transformers_logging.disable_progress_bar()
    try:
        # A bad local path fails here, before the metrics endpoint starts.
        check_model_source(args.model)
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    try:
        options = WorkerOptions(
            max_queue=args.max_queue,
            max_batch=args.max_batch,
            kv_store_bytes=args.kv_store_bytes,
            kv_ttl_seconds=args.kv_ttl_seconds,
            max_message_bytes=args.max_message_bytes,
            kv_chunk_bytes=args.kv_chunk_bytes,
            kv_transfer_timeout=args.kv_timeout,
            drain_timeout=args.drain_timeout,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error

    try:
        asyncio.run(
            serve(
                args.role,
                model=args.model,
                dtype=args.dtype,
                device=args.device,
                host=args.host,
                grpc_port=args.grpc_port,
                metrics_port=args.metrics_port,
                options=options,
                cache_dir=args.cache_dir,
                served_model_name=args.served_model_name,
                revision=args.revision,
            )
        )
    except ModelLoadError as error:
        raise CommandError(str(error)) from error
    except OSError as error:
        raise CommandError(f"cannot serve: {error}") from error
    return 0
