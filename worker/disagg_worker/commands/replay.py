"""`disagg replay`: replay a request trace against any OpenAI-compatible server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from disagg_worker.text import counted

logger = logging.getLogger(__name__)

# Requests in the built-in synthetic workload when neither --max-requests
# nor --duration bounds it.
DEFAULT_SYNTHETIC_REQUESTS = 100


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be above 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: it must be at least 1")
    return value


def register(subparsers) -> None:
    from disagg_worker.traces import FORMATS

    parser = subparsers.add_parser(
        "replay",
        help="replay a request trace against an OpenAI-compatible server and report latency",
        description=(
            "Send a trace's requests at their arrival times (open loop) as streamed "
            "/v1/completions calls with token-id prompts of the trace's length and "
            "max_tokens plus ignore_eos for its output length. Without --trace, a synthetic "
            "workload shaped like the Azure 2023 conversation trace is used."
        ),
    )
    parser.add_argument("--url", required=True, help="server URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--trace", type=Path, help="trace file (default: synthetic workload)")
    parser.add_argument("--format", choices=FORMATS, help="trace format (default: from the suffix)")
    parser.add_argument(
        "--time-scale",
        type=_positive_float,
        default=1.0,
        help="divide the gaps between arrivals by this factor (default: %(default)s)",
    )
    parser.add_argument(
        "--token-scale",
        type=_positive_float,
        default=1.0,
        help="multiply prompt and output token counts by this factor (default: %(default)s)",
    )
    parser.add_argument("--max-requests", type=_positive_int, help="send at most N requests")
    parser.add_argument(
        "--duration",
        type=_positive_float,
        help="send only requests that arrive within S seconds of scaled time",
    )
    parser.add_argument(
        "--slo-ttft",
        type=_positive_float,
        default=5.0,
        help="time-to-first-token objective in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--slo-itl",
        type=_positive_float,
        default=0.3,
        help=(
            "objective for a request's mean inter-token latency in seconds, the same default "
            "as disagg simulate (default: %(default)s)"
        ),
    )
    parser.add_argument("--report", type=Path, help="write the JSON report to this file")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency and queue depth")
    parser.add_argument("--model", help="model name to request (default: the first of /v1/models)")
    parser.add_argument(
        "--max-context",
        type=_positive_int,
        default=8192,
        help="model context in tokens; longer prompts are shortened to fit with their output "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=600.0,
        help="seconds one request may take (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of prompts and synthetic arrivals"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--log-level", default="WARNING", help="logging level (default: %(default)s)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from disagg_worker.cli import CommandError
    from disagg_worker.logs import configure_logging
    from disagg_worker.replay import report
    from disagg_worker.replay.runner import fetch_model_name, replay
    from disagg_worker.replay.workload import plan_requests
    from disagg_worker.traces import TraceError, read_trace, synthetic_trace

    configure_logging(args.log_level)
    if args.trace is not None:
        try:
            trace = read_trace(args.trace, args.format)
        except TraceError as error:
            raise CommandError(str(error)) from error
        source = str(args.trace)
        if trace.skipped:
            print(
                f"disagg replay: skipped {counted(trace.skipped, 'malformed row')} of {args.trace} "
                f"(first on line {trace.first_skipped_line})"
            )
    else:
        count = args.max_requests or DEFAULT_SYNTHETIC_REQUESTS
        if args.duration is not None and args.max_requests is None:
            # Enough arrivals at the Azure rate to fill the duration.
            count = max(1, int(args.duration * args.time_scale * 5.5 * 2))
        trace = synthetic_trace(count, seed=args.seed, max_prompt_tokens=args.max_context - 1)
        source = "synthetic (Azure 2023 conversation statistics)"

    planned = plan_requests(
        trace,
        time_scale=args.time_scale,
        token_scale=args.token_scale,
        max_requests=args.max_requests,
        duration_s=args.duration,
        max_context=args.max_context,
        seed=args.seed,
    )
    if not planned:
        raise CommandError("no request to send: --duration or --max-requests leaves none")
    clipped = sum(1 for request in planned if request.clipped)
    if clipped:
        print(f"disagg replay: shortened {clipped} prompts to fit --max-context {args.max_context}")

    async def main():
        model = args.model or await fetch_model_name(args.url)
        results, queue, wall_s = await replay(
            args.url, model, planned, args.request_timeout, progress=not args.no_progress
        )
        return model, results, queue, wall_s

    try:
        model, results, queue, wall_s = asyncio.run(main())
    except (OSError, RuntimeError) as error:
        raise CommandError(f"cannot reach {args.url}: {error}") from error
    except Exception as error:
        import openai

        if isinstance(error, openai.APIError):
            raise CommandError(f"cannot list models at {args.url}: {error}") from error
        raise

    summary = report.summarize(results, wall_s, args.slo_ttft, args.slo_itl)
    print(f"trace: {source}; {counted(len(planned), 'request')} to {args.url} (model {model})")
    print(report.format_table(summary))
    meta = {
        "url": args.url,
        "model": model,
        "trace": source,
        "time_scale": args.time_scale,
        "token_scale": args.token_scale,
        "skipped_rows": trace.skipped,
        "first_skipped_line": trace.first_skipped_line,
        "clipped_prompts": clipped,
    }
    if args.report is not None:
        report.write_report(args.report, summary, results, queue, meta)
        print(f"report: {args.report}")
    if args.plot is not None:
        report.plot(args.plot, results, queue)
        print(f"plot: {args.plot}")
    return 0 if not summary["errors"] else 1
