"""`disagg router`: the OpenAI-compatible HTTP router in front of the pools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

logger = logging.getLogger(__name__)

# Port of the workers' gRPC servers behind the headless Services (the
# DisaggregatedDeployment's kvTransfer.port default).
DEFAULT_DISCOVER_PORT = 50051


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "router",
        help="serve the OpenAI-compatible API and route requests to prefill and decode pools",
        description=(
            "Serve /v1/completions, /v1/chat/completions and /v1/models, and route each "
            "request to a prefill and a decode replica (or a decode replica alone for "
            "local prefill). Replicas come from exactly one of --decode-endpoints "
            "(with optional --prefill-endpoints), --discover or --endpoints-file."
        ),
    )
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: %(default)s)")
    parser.add_argument(
        "--model",
        default="smollm2",
        help="model source, as `disagg worker --model` takes it; the router loads only its "
        "tokenizer and config (default: %(default)s)",
    )
    parser.add_argument(
        "--served-model-name",
        help="model name in /v1/models and responses; requests may also name --model or the "
        "model's own name (default: the model's own name)",
    )
    parser.add_argument(
        "--revision",
        help="revision of a Hugging Face model id (branch, tag or commit) whose tokenizer and "
        "config the router loads; pass the workers' --revision",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="model cache folder (default: $DISAGG_CACHE_DIR or ~/.cache/disagg)",
    )
    sources = parser.add_argument_group("replica discovery")
    sources.add_argument(
        "--prefill-endpoints",
        default="",
        help="comma-separated host:port list of prefill replicas' gRPC servers",
    )
    sources.add_argument(
        "--decode-endpoints",
        default="",
        help="comma-separated host:port list of decode (or aggregated) replicas' gRPC servers",
    )
    sources.add_argument(
        "--discover",
        metavar="NAME.NAMESPACE",
        help="resolve the headless Services NAME-prefill.NAMESPACE.svc and "
        "NAME-decode.NAMESPACE.svc by DNS",
    )
    sources.add_argument(
        "--discover-port",
        type=int,
        default=DEFAULT_DISCOVER_PORT,
        help="gRPC port of the replicas found by --discover (default: %(default)s)",
    )
    sources.add_argument(
        "--endpoints-file",
        type=Path,
        help='JSON file {"prefill": [host:port, ...], "decode": [...]}, reread every '
        "--discovery-interval seconds (written by `disagg serve`)",
    )
    sources.add_argument(
        "--discovery-interval",
        type=float,
        default=5.0,
        help="seconds between two resolutions of --discover or --endpoints-file "
        "(default: %(default)s)",
    )
    routing = parser.add_argument_group("routing")
    routing.add_argument(
        "--min-remote-prefill-tokens",
        type=int,
        default=64,
        help="prompts with fewer tokens are prefilled on the decode replica (default: %(default)s)",
    )
    routing.add_argument(
        "--prefill-timeout",
        type=float,
        default=30.0,
        help="seconds a Prefill call may take for queueing and the forward pass before it is "
        "retried on another prefill replica (default: %(default)s)",
    )
    routing.add_argument(
        "--kv-timeout",
        type=float,
        default=30.0,
        help="seconds added to the Prefill deadline for the KV transfer (default: %(default)s)",
    )
    routing.add_argument(
        "--retry-after",
        type=int,
        default=1,
        help="seconds sent in Retry-After when every replica is full (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="log lines as plain text or one JSON object a line (default: %(default)s)",
    )
    parser.set_defaults(func=run)


def build_discovery(args):
    """Return the discovery source the arguments select, raising CommandError on conflicts."""
    from disagg_worker.cli import CommandError
    from disagg_worker.router.discovery import (
        DnsDiscovery,
        Endpoints,
        FileDiscovery,
        StaticDiscovery,
        parse_address_list,
    )

    static = bool(args.prefill_endpoints or args.decode_endpoints)
    chosen = [
        name
        for name, used in (
            ("--decode-endpoints/--prefill-endpoints", static),
            ("--discover", bool(args.discover)),
            ("--endpoints-file", args.endpoints_file is not None),
        )
        if used
    ]
    if len(chosen) != 1:
        given = ", ".join(chosen) or "none"
        raise CommandError(
            "pass exactly one replica source: --decode-endpoints (with optional "
            f"--prefill-endpoints), --discover or --endpoints-file; got {given}"
        )
    try:
        if args.discover:
            return DnsDiscovery(args.discover, args.discover_port)
        if args.endpoints_file is not None:
            return FileDiscovery(args.endpoints_file)
        endpoints = Endpoints(
            prefill=parse_address_list(args.prefill_endpoints, "--prefill-endpoints"),
            decode=parse_address_list(args.decode_endpoints, "--decode-endpoints"),
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    if not endpoints.decode:
        raise CommandError(
            "--decode-endpoints is empty; give at least one decode replica as host:port"
        )
    return StaticDiscovery(endpoints)


def _check_numbers(args) -> None:
    from disagg_worker.cli import CommandError

    checks = (
        ("--port", args.port, 0 <= args.port < 65536, "between 0 and 65535"),
        (
            "--min-remote-prefill-tokens",
            args.min_remote_prefill_tokens,
            args.min_remote_prefill_tokens >= 0,
            "at least 0",
        ),
        ("--prefill-timeout", args.prefill_timeout, args.prefill_timeout > 0, "above 0"),
        ("--kv-timeout", args.kv_timeout, args.kv_timeout > 0, "above 0"),
        ("--retry-after", args.retry_after, args.retry_after >= 0, "at least 0"),
        ("--discovery-interval", args.discovery_interval, args.discovery_interval > 0, "above 0"),
    )
    for option, value, valid, rule in checks:
        if not valid:
            raise CommandError(f"invalid {option} {value}: it must be {rule}")


def run(args: argparse.Namespace) -> int:
    from disagg_worker.cli import CommandError
    from disagg_worker.logs import configure_logging
    from disagg_worker.model import ModelLoadError
    from disagg_worker.router.app import Router, RouterSettings, start_server
    from disagg_worker.router.dispatch import DispatchConfig
    from disagg_worker.router.served_model import load_served_model

    configure_logging(args.log_level, args.log_format)
    _check_numbers(args)
    discovery = build_discovery(args)
    try:
        served = load_served_model(args.model, args.cache_dir, revision=args.revision)
    except ModelLoadError as error:
        raise CommandError(str(error)) from error

    settings = RouterSettings(
        model_name=args.served_model_name or served.name,
        max_context=served.max_context,
        vocab_size=served.vocab_size,
        model_aliases=frozenset({args.model, served.name}),
        dispatch=DispatchConfig(
            min_remote_prefill_tokens=args.min_remote_prefill_tokens,
            prefill_timeout_s=args.prefill_timeout,
            kv_timeout_s=args.kv_timeout,
            eos_token_ids=served.eos_token_ids,
        ),
        retry_after_s=args.retry_after,
        discovery_interval_s=args.discovery_interval,
    )
    router = Router(settings, served.tokenizer, discovery)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            runner, _ = await start_server(router, args.host, args.port)
        except OSError as error:
            raise CommandError(
                f"cannot listen on {args.host}:{args.port}: {error.strerror or error}"
            ) from error
        await stop.wait()
        logger.info("router stopping: finishing requests in flight")
        await runner.cleanup()

    asyncio.run(serve())
    return 0
