"""`disagg serve`: the router and both pools as local processes, supervised."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from disagg_worker import serve_autoscale

logger = logging.getLogger(__name__)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid replica count {value}: it must be at least 0")
    return value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the router, a prefill pool and a decode pool as local processes",
        description=(
            "Start `disagg worker` processes for each pool and a `disagg router` in front of "
            "them, wait until all are healthy, print the URL, and restart any process that "
            "exits. Ctrl-C or SIGTERM drains and stops every process."
        ),
    )
    parser.add_argument("--model", default="smollm2", help="model source (default: %(default)s)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address of every process (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="router HTTP port, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--prefill-replicas", type=_count, default=1, help="prefill replicas (default: %(default)s)"
    )
    parser.add_argument(
        "--decode-replicas", type=_count, default=1, help="decode replicas (default: %(default)s)"
    )
    parser.add_argument(
        "--aggregated-replicas",
        type=_count,
        default=0,
        help="aggregated replicas (prefill and decode in one process), served as decode "
        "replicas with local prefill (default: %(default)s)",
    )
    parser.add_argument(
        "--threads-per-replica",
        type=int,
        default=None,
        help="torch threads of each worker (OMP_NUM_THREADS); default: CPU cores divided by "
        "the number of workers, at least 1",
    )
    parser.add_argument(
        "--min-remote-prefill-tokens",
        type=int,
        default=64,
        help="prompts with fewer tokens are prefilled on the decode replica (default: %(default)s)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds each process may drain on stop (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for every process to be healthy (default: %(default)s)",
    )
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every `disagg worker`, repeatable "
        "(e.g. --worker-arg=--max-batch=4)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    serve_autoscale.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from disagg_worker.cli import CommandError
    from disagg_worker.logs import PREFIX_ENV, configure_logging
    from disagg_worker.serve import LocalDeployment, PoolOptions, StartupError

    os.environ.setdefault(PREFIX_ENV, "serve")
    configure_logging(args.log_level)
    try:
        autoscaling = serve_autoscale.pools_from_args(args)
    except ValueError as error:
        raise CommandError(str(error)) from error
    workers = args.prefill_replicas + args.decode_replicas + args.aggregated_replicas
    if autoscaling is not None:
        # Threads are sized for the most workers the pools may reach.
        workers = autoscaling.prefill.max_replicas + autoscaling.decode.max_replicas
    if args.decode_replicas + args.aggregated_replicas == 0:
        raise CommandError(
            "--decode-replicas and --aggregated-replicas are both 0; at least one replica must "
            "generate tokens"
        )
    if not 0 <= args.port < 65536:
        raise CommandError(f"invalid --port {args.port}: use 0 (any free port) to 65535")
    threads = args.threads_per_replica or max(1, (os.cpu_count() or 1) // max(1, workers))
    if threads < 1:
        raise CommandError(f"invalid --threads-per-replica {threads}: it must be at least 1")

    options = PoolOptions(
        model=args.model,
        host=args.host,
        threads=threads,
        drain_timeout_s=args.drain_timeout,
        worker_args=list(args.worker_arg),
    )
    deployment = LocalDeployment(
        options,
        prefill_replicas=args.prefill_replicas,
        decode_replicas=args.decode_replicas,
        aggregated_replicas=args.aggregated_replicas,
        port=args.port,
        router_args=["--min-remote-prefill-tokens", str(args.min_remote_prefill_tokens)],
    )

    # SIGTERM and Ctrl-C both end the supervise loop; stopping happens once, below.
    stop_requested = []

    def request_stop(signum, _frame) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop_requested.append(signum)
        if len(stop_requested) == 1:
            # A second Ctrl-C during startup still interrupts time.sleep.
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    logger.info(
        "starting model=%s prefill=%d decode=%d aggregated=%d threads_per_replica=%d",
        args.model,
        args.prefill_replicas,
        args.decode_replicas,
        args.aggregated_replicas,
        threads,
    )
    try:
        deployment.start(timeout_s=args.startup_timeout)
        print(f"disagg serve: ready at {deployment.url}", flush=True)
        print(f"disagg serve: OpenAI base URL {deployment.url}/v1", flush=True)
        autoscaler = None
        if autoscaling is not None:
            from disagg_operator.local_autoscaler import LocalAutoscaler

            actuator = serve_autoscale.DeploymentActuator(deployment)
            autoscaler = LocalAutoscaler(
                autoscaling, actuator, emit=lambda line: print(f"disagg serve: {line}", flush=True)
            )
            next_tick = time.monotonic() + autoscaling.settings.interval_seconds
        while True:
            deployment.supervise_once()
            if autoscaler is not None and time.monotonic() >= next_tick:
                next_tick += autoscaling.settings.interval_seconds
                try:
                    autoscaler.tick()
                except Exception:
                    # A failed tick must not stop serving; the next one decides afresh.
                    logger.exception("autoscaler tick failed; next tick decides again")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except StartupError as error:
        print(f"disagg serve: error: {error}", file=sys.stderr)
        deployment.stop()
        return 1
    # Further signals must not interrupt the drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deployment.stop()
    return 0
