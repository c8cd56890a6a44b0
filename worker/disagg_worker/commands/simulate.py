"""`disagg simulate`: replay a trace through a discrete-event model of both pools.

Runs the builtin autoscaling policy and the baselines (static at the peak
need, static at the mean need, a utilisation threshold policy) over the same
trace and calibration, and reports SLO attainment, replica-seconds per pool
and scale events.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from disagg_worker.cli import CommandError
from disagg_worker.text import counted
from disagg_worker.traces import FORMATS, TraceError, TraceRequest, read_trace

DEFAULT_CALIBRATION = Path("bench/calibration.json")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate autoscaling of both pools under a request trace",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--trace", required=True, type=Path, help="trace file to replay")
    parser.add_argument("--format", choices=FORMATS, help="trace format (default: from suffix)")
    parser.add_argument(
        "--calibration",
        type=Path,
        default=DEFAULT_CALIBRATION,
        help=f"cost model JSON (default {DEFAULT_CALIBRATION})",
    )

    # Objectives and trace scaling.
    parser.add_argument(
        "--slo-ttft", type=float, default=5.0, help="time-to-first-token objective, s (default 5)"
    )
    parser.add_argument(
        "--slo-itl", type=float, default=0.3, help="inter-token latency objective, s (default 0.3)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help=(
            "divide the gaps between arrivals by this factor, as disagg replay does; "
            "above 1 raises the request rate (default 1)"
        ),
    )
    parser.add_argument(
        "--token-scale",
        type=float,
        default=1.0,
        help=(
            "multiply prompt and output token counts by this factor, above 0; "
            "scaled counts are at least 1 token (default 1)"
        ),
    )
    parser.add_argument("--max-requests", type=int, help="replay only the first N requests")

    # Autoscaling settings and pool fields of the simulated deployment.
    parser.add_argument(
        "--interval", type=float, default=15.0, help="autoscaling interval, s (default 15)"
    )
    parser.add_argument(
        "--scale-down-stabilization",
        type=float,
        default=300.0,
        help="scale-down stabilization window, s (default 300)",
    )
    parser.add_argument(
        "--prefill-scale-down-stabilization",
        type=float,
        help="prefill's own scale-down window, s (default --scale-down-stabilization)",
    )
    parser.add_argument(
        "--decode-scale-down-stabilization",
        type=float,
        help="decode's own scale-down window, s (default --scale-down-stabilization)",
    )
    parser.add_argument(
        "--load-window",
        type=float,
        default=0.0,
        help="scale down on the mean load of the decisions in this window, s (default 0)",
    )
    parser.add_argument(
        "--max-scale-down-step",
        type=int,
        help="max replicas removed per decision (default --max-step)",
    )
    parser.add_argument(
        "--scale-up-stabilization",
        type=float,
        default=0.0,
        help="scale-up stabilization window, s (default 0)",
    )
    parser.add_argument(
        "--max-step",
        type=int,
        default=4,
        help="max replicas added or removed per decision (default 4)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.1, help="no change within 1 ± this ratio (default 0.1)"
    )
    parser.add_argument(
        "--target-queue-depth",
        type=float,
        default=4.0,
        help="targetQueueDepth per replica (default 4)",
    )
    parser.add_argument(
        "--decode-in-flight-fraction",
        type=float,
        default=0.75,
        help=(
            "decode targetInFlight as a fraction of the largest batch whose step meets "
            "--slo-itl (default 0.75)"
        ),
    )
    parser.add_argument(
        "--prefill-min-replicas", type=int, default=1, help="prefill minReplicas (default 1)"
    )

    # What to run and what to write.
    parser.add_argument(
        "--policies",
        default="builtin,static_peak,static_mean,utilisation",
        help=(
            "comma-separated policies to run, from builtin, static_peak, static_mean and "
            "utilisation (default all four)"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--plot", type=Path, help="PNG of queue depth and replicas (builtin)")
    parser.set_defaults(func=run)


def scale_trace(
    requests: list[TraceRequest], time_scale: float, token_scale: float
) -> list[TraceRequest]:
    """Return the requests with arrival gaps divided by `time_scale` and token counts
    multiplied by `token_scale`, counts at least 1."""
    return [
        TraceRequest(
            r.arrival_s / time_scale,
            max(1, round(r.prompt_tokens * token_scale)),
            max(1, round(r.output_tokens * token_scale)),
        )
        for r in requests
    ]


def _check_positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise CommandError(f"invalid {name} {value}: must be above 0")


def run(args: argparse.Namespace) -> int:
    from disagg_operator.policy import AutoscalingSettings
    from disagg_operator.simulate import POLICY_NAMES, SimulatedDeployment, compare_policies
    from disagg_operator.simulate.calibration import CalibrationError, load_calibration
    from disagg_operator.simulate.report import format_table, plot_timeline, result_summary
    from disagg_operator.simulate.runner import Objectives

    names = ("--slo-ttft", "--slo-itl", "--time-scale", "--token-scale", "--interval")
    for name in (*names, "--decode-in-flight-fraction", "--target-queue-depth"):
        _check_positive(name, getattr(args, name[2:].replace("-", "_")))
    _check_positive("--max-requests", args.max_requests)
    _check_positive("--max-scale-down-step", args.max_scale_down_step)
    for name in (
        "--load-window",
        "--prefill-scale-down-stabilization",
        "--decode-scale-down-stabilization",
    ):
        value = getattr(args, name[2:].replace("-", "_"))
        if value is not None and value < 0:
            raise CommandError(f"invalid {name} {value:g}: must be 0 or more seconds")
    policies = tuple(name.strip() for name in args.policies.split(",") if name.strip())
    unknown = [name for name in policies if name not in POLICY_NAMES]
    if unknown or not policies:
        raise CommandError(
            f"invalid --policies {args.policies!r}: choose from {', '.join(POLICY_NAMES)}"
        )
    if args.plot is not None and "builtin" not in policies:
        raise CommandError("--plot draws the builtin policy: include builtin in --policies")

    try:
        trace = read_trace(args.trace, args.format)
        calibration = load_calibration(args.calibration)
        settings = AutoscalingSettings(
            interval_seconds=args.interval,
            scale_up_stabilization_seconds=args.scale_up_stabilization,
            scale_down_stabilization_seconds=args.scale_down_stabilization,
            max_step_replicas=args.max_step,
            tolerance=args.tolerance,
            load_window_seconds=args.load_window,
            max_scale_down_step_replicas=args.max_scale_down_step,
        )
        deployment = SimulatedDeployment(
            settings=settings,
            target_queue_depth=args.target_queue_depth,
            prefill_min_replicas=args.prefill_min_replicas,
            decode_in_flight_fraction=args.decode_in_flight_fraction,
            prefill_scale_down_stabilization_seconds=args.prefill_scale_down_stabilization,
            decode_scale_down_stabilization_seconds=args.decode_scale_down_stabilization,
        )
        objectives = Objectives(ttft_seconds=args.slo_ttft, itl_seconds=args.slo_itl)
        # Builds the pool configs once so invalid pool fields fail before any run.
        deployment.pools(calibration, objectives)
    except CalibrationError as error:
        raise CommandError(f"{error}; pass a valid file with --calibration") from error
    except (TraceError, ValueError) as error:
        raise CommandError(str(error)) from error
    if trace.skipped:
        print(
            f"skipped {counted(trace.skipped, 'malformed row')} of {args.trace}, "
            f"first on line {trace.first_skipped_line}",
            file=sys.stderr,
        )

    requests = trace.requests[: args.max_requests] if args.max_requests else trace.requests
    requests = scale_trace(requests, args.time_scale, args.token_scale)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = compare_policies(
        requests, calibration, objectives, deployment, policies, progress=progress
    )
    summaries = {name: result_summary(result) for name, result in results.items()}

    if args.plot is not None:
        title = (
            f"builtin policy: {args.trace.name}, {counted(len(requests), 'request')}, token scale "
            f"{args.token_scale:g}, time scale {args.time_scale:g}, "
            f"SLO TTFT {args.slo_ttft:g} s, ITL {args.slo_itl:g} s\n"
            f"calibration {args.calibration.name}: {calibration.source}"
        )
        plot_timeline(results["builtin"], args.plot, title)
        progress(f"plot written to {args.plot}")

    if args.json:
        print(json.dumps(summaries, indent=2))
    else:
        print(
            f"{counted(len(requests), 'request')}, SLO TTFT {args.slo_ttft:g} s, "
            f"ITL {args.slo_itl:g} s, "
            f"calibration {args.calibration}"
        )
        print(format_table(summaries))
    return 0
