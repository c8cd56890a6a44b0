"""`disagg operator`: run the Kubernetes operator (kopf) for DisaggregatedDeployments.

Credentials come the standard way: the in-cluster service account, else
KUBECONFIG (or ~/.kube/config); without either the command exits at once.
With peering on, replicas of the operator write keep-alives into a
KopfPeering (namespaced) or ClusterKopfPeering (cluster-wide) object, which
must exist. The live replica with the highest priority serves, and the
others stand by until its keep-alive expires.
"""

from __future__ import annotations

import argparse
import logging
import random

from disagg_worker.cli import CommandError

DEFAULT_PEERING_NAME = "disagg-operator"
# Upper bound of the random peering priority; each replica draws its own, so
# two replicas never share one (kopf pauses all replicas of equal priority).
MAX_RANDOM_PRIORITY = 1_000_000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator for DisaggregatedDeployments",
        description=__doc__.split("\n\n", 1)[1],
    )

    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="serve the resources in namespace NS; repeat for more; a glob such as 'team-*' "
        "also works",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="serve the resources in every namespace (needs cluster-wide RBAC)",
    )

    parser.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="plain text lines or one JSON object per line (default: plain)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="INFO",
        help="lowest level logged (default: INFO)",
    )

    liveness = parser.add_mutually_exclusive_group()
    liveness.add_argument(
        "--liveness-port",
        type=int,
        metavar="PORT",
        help="serve the liveness probe on http://0.0.0.0:PORT/healthz",
    )
    liveness.add_argument(
        "--liveness",
        metavar="URL",
        help="serve the liveness probe at URL, e.g. http://0.0.0.0:8080/healthz",
    )

    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        default=DEFAULT_PEERING_NAME,
        help=f"name of the kopf peering object (default: {DEFAULT_PEERING_NAME})",
    )
    peering.add_argument(
        "--standalone",
        action="store_true",
        help="run without peering; only one replica of the operator may run",
    )
    parser.add_argument(
        "--priority",
        type=int,
        help="peering priority; the highest live one serves (default: random)",
    )

    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="seconds between two safety-net reconciles of each resource (default: 60)",
    )

    parser.set_defaults(func=run)


def liveness_endpoint(args: argparse.Namespace) -> str | None:
    if args.liveness:
        return args.liveness
    if args.liveness_port is not None:
        if not 1 <= args.liveness_port <= 65535:
            raise CommandError(f"--liveness-port {args.liveness_port} is invalid; use 1..65535")
        return f"http://0.0.0.0:{args.liveness_port}/healthz"
    return None


def check_args(args: argparse.Namespace) -> None:
    """Reject option combinations argparse cannot express."""
    if not args.namespaces and not args.all_namespaces:
        raise CommandError("give --namespace NS (repeatable) or --all-namespaces")
    if args.namespaces and any(not namespace.strip() for namespace in args.namespaces):
        raise CommandError("--namespace is empty; give a namespace name or a glob")
    if args.resync_seconds <= 0:
        raise CommandError(f"--resync-seconds {args.resync_seconds} is invalid; use > 0")


def run(args: argparse.Namespace) -> int:
    # kopf is imported here so that `disagg --help` stays fast.
    import kopf

    from .handlers import HandlerOptions, build_registry
    from .kube import CredentialsError, Kube

    check_args(args)
    endpoint = liveness_endpoint(args)
    # Checked before kopf starts: kopf would retry a failed startup forever.
    try:
        kube = Kube.from_environment()
    except CredentialsError as error:
        raise CommandError(str(error)) from error
    kopf.configure(
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if args.log_format == "json" else None,
    )
    logging.getLogger().setLevel(args.log_level)

    priority = args.priority
    if priority is None and not args.standalone:
        priority = random.randint(1, MAX_RANDOM_PRIORITY)
    logger.info(
        "starting operator namespaces=%s all_namespaces=%s peering=%s priority=%s liveness=%s",
        ",".join(args.namespaces or ()),
        args.all_namespaces,
        "off" if args.standalone else args.peering,
        priority,
        endpoint,
    )
    kopf.run(
        registry=build_registry(HandlerOptions(resync_seconds=args.resync_seconds)),
        clusterwide=args.all_namespaces,
        namespaces=args.namespaces or (),
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=priority,
        liveness_endpoint=endpoint,
        # The startup handler uses this client instead of loading another.
        memo=kopf.Memo(kube=kube),
    )
    logger.info("operator stopped")
    return 0
