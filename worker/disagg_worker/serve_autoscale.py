"""Autoscaling options of `disagg serve` and the actuator over its local pools.

`add_arguments` adds the --prefill-min/--prefill-max/--decode-min/--decode-max
group, and `pools_from_args` turns them into the policy inputs. It returns
None when no bound is given, so the pools keep --prefill-replicas and
--decode-replicas. `DeploymentActuator` lets
`disagg_operator.local_autoscaler` read and scale a `LocalDeployment`.
"""

from __future__ import annotations

import argparse
import logging
import math

logger = logging.getLogger(__name__)

BOUND_OPTIONS = ("prefill_min", "prefill_max", "decode_min", "decode_max")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid replica count {text!r}: expected an integer"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid replica count {value}: it must be at least 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seconds {text!r}: expected a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"invalid seconds {value}: it must be 0 or more")
    return value


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid replica step {text!r}: expected an integer"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid replica step {value}: it must be 1 or more")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid number {value}: it must be above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "autoscaling",
        "Any of --prefill-min, --prefill-max, --decode-min or --decode-max turns on the "
        "builtin autoscaling policy of the operator for both pools; a bound not given is the "
        "pool's --*-replicas. Without them the pools keep --prefill-replicas and "
        "--decode-replicas.",
    )
    group.add_argument("--prefill-min", type=_count, help="minimum prefill replicas, 0 allowed")
    group.add_argument("--prefill-max", type=_count, help="maximum prefill replicas")
    group.add_argument("--decode-min", type=_count, help="minimum decode replicas, at least 1")
    group.add_argument("--decode-max", type=_count, help="maximum decode replicas")
    group.add_argument(
        "--target-queue-depth",
        type=float,
        default=4.0,
        help="waiting requests per replica each pool is sized for (default: %(default)s)",
    )
    group.add_argument(
        "--autoscale-interval",
        type=_seconds,
        default=15.0,
        help="seconds between two decisions (default: %(default)s)",
    )
    group.add_argument(
        "--scale-up-stabilization",
        type=_seconds,
        default=0.0,
        help="seconds over which a scale-up takes the lowest recommendation; 0 scales up at "
        "once (default: %(default)s)",
    )
    group.add_argument(
        "--scale-down-stabilization",
        type=_seconds,
        default=300.0,
        help="seconds of recommendations a scale-down takes the highest of, and the time a "
        "pool keeps its size after a scale (default: %(default)s)",
    )
    for role in ("prefill", "decode"):
        group.add_argument(
            f"--{role}-scale-down-stabilization",
            type=_seconds,
            help=f"scale-down stabilization window of the {role} pool, seconds "
            "(default: --scale-down-stabilization)",
        )
    group.add_argument(
        "--load-window",
        type=_seconds,
        default=0.0,
        help="seconds of past decisions whose mean load a decision uses, never below the "
        "current load; 0 uses the current load only (default: %(default)s)",
    )
    group.add_argument(
        "--max-scale-down-step",
        type=_step,
        help="maximum replicas one decision removes per pool (default: 4, the maximum "
        "replicas one decision adds)",
    )
    for role in ("prefill", "decode"):
        group.add_argument(
            f"--{role}-target-in-flight",
            type=_positive,
            help=f"running requests per {role} replica counted as one replica of load, on top "
            "of the queue depth (default: queue depth alone)",
        )


def pools_from_args(args: argparse.Namespace):
    """Return the `LocalPools` the options ask for, or None when autoscaling is off.

    Raises ValueError naming the option and the fix for an impossible
    combination. Sets args.prefill_replicas and args.decode_replicas to the
    initial sizes, clamped into the bounds.
    """
    from disagg_operator.local_autoscaler import LocalPools
    from disagg_operator.policy import DECODE, PREFILL, AutoscalingSettings, PoolConfig

    if all(getattr(args, option) is None for option in BOUND_OPTIONS):
        return None
    if args.aggregated_replicas:
        raise ValueError(
            f"--aggregated-replicas {args.aggregated_replicas} cannot be combined with "
            "autoscaling, which scales the prefill and decode pools; drop one of them"
        )
    if not math.isfinite(args.target_queue_depth) or args.target_queue_depth <= 0:
        raise ValueError(
            f"invalid --target-queue-depth {args.target_queue_depth}: it must be above 0"
        )
    if args.autoscale_interval <= 0:
        raise ValueError(f"invalid --autoscale-interval {args.autoscale_interval}: above 0")

    configs = {}
    for role in (PREFILL, DECODE):
        initial = getattr(args, f"{role}_replicas")
        given_low = getattr(args, f"{role}_min")
        high = getattr(args, f"{role}_max")
        low = initial if given_low is None else given_low
        high = max(low, initial) if high is None else high
        if role == DECODE and low < 1:
            raise ValueError(
                f"invalid --decode-min {low}: the decode pool generates every token, so it "
                "needs at least 1 replica; use --decode-min 1 or more"
            )
        if high < low:
            source = f"--{role}-min" if given_low is not None else f"--{role}-replicas"
            raise ValueError(
                f"invalid --{role}-max {high}: it is below the minimum {low} ({source}); "
                f"raise --{role}-max or lower {source}"
            )
        clamped = max(low, min(high, initial))
        if clamped != initial:
            logger.info(
                "initial replicas pool=%s %d->%d to fit %d..%d", role, initial, clamped, low, high
            )
            setattr(args, f"{role}_replicas", clamped)
        configs[role] = PoolConfig(
            role,
            min_replicas=low,
            max_replicas=high,
            target_queue_depth=args.target_queue_depth,
            target_in_flight=getattr(args, f"{role}_target_in_flight"),
            scale_down_stabilization_seconds=getattr(args, f"{role}_scale_down_stabilization"),
        )
    settings = AutoscalingSettings(
        interval_seconds=args.autoscale_interval,
        scale_up_stabilization_seconds=args.scale_up_stabilization,
        scale_down_stabilization_seconds=args.scale_down_stabilization,
        load_window_seconds=args.load_window,
        max_scale_down_step_replicas=args.max_scale_down_step,
    )
    return LocalPools(configs[PREFILL], configs[DECODE], settings)


class DeploymentActuator:
    """`LocalActuator` over a `LocalDeployment`: its pools are the replicas, `scale_to` acts."""

    def __init__(self, deployment) -> None:
        self.deployment = deployment

    def current_replicas(self, role: str) -> int:
        return len(self.deployment.pools[role].replicas)

    def ready_targets(self, role: str):
        from disagg_operator.metrics_source import PodTarget

        host = self.deployment.options.host
        return [
            PodTarget(replica.name, host, replica.metrics_port, role)
            for replica in list(self.deployment.pools[role].replicas)
            if replica.process.healthy()
        ]

    def router_target(self):
        from disagg_operator.metrics_source import PodTarget

        router = self.deployment.router
        if router is None or not router.running():
            return None
        return PodTarget("router", self.deployment.options.host, self.deployment.port, "router")

    def scale(self, role: str, replicas: int) -> None:
        self.deployment.pools[role].scale_to(replicas)
