"""Summaries, the JSON report and the plot of a replay."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from disagg_worker.replay.runner import QueueSample, RequestResult
from disagg_worker.text import counted


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = math.ceil(position)
    weight = position - lower
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def meets_slo(result: RequestResult, slo_ttft_s: float, slo_itl_s: float) -> bool:
    """Check whether a request completed with TTFT <= slo_ttft_s and a mean inter-token
    latency (time per output token after the first) <= slo_itl_s."""
    if result.error is not None or result.ttft_s is None:
        return False
    if result.ttft_s > slo_ttft_s:
        return False
    mean_itl_s = sum(result.itl_s) / len(result.itl_s) if result.itl_s else 0.0
    return mean_itl_s <= slo_itl_s


def summarize(
    results: list[RequestResult], wall_s: float, slo_ttft_s: float, slo_itl_s: float
) -> dict:
    completed = [result for result in results if result.error is None]
    ttfts = [result.ttft_s for result in completed if result.ttft_s is not None]
    itls = [gap for result in completed for gap in result.itl_s]
    e2es = [result.e2e_s for result in completed if result.e2e_s is not None]
    output_tokens = sum(result.output_tokens for result in completed)
    summary = {
        "requests": len(results),
        "completed": len(completed),
        "errors": dict(Counter(result.error for result in results if result.error)),
        "short_outputs": sum(1 for result in completed if result.output_tokens < result.max_tokens),
        "duration_s": wall_s,
        "throughput_rps": len(completed) / wall_s if wall_s > 0 else 0.0,
        "output_tokens_per_s": output_tokens / wall_s if wall_s > 0 else 0.0,
        "slo_ttft_s": slo_ttft_s,
        "slo_itl_s": slo_itl_s,
        "slo_attainment": (
            sum(1 for result in results if meets_slo(result, slo_ttft_s, slo_itl_s)) / len(results)
            if results
            else 0.0
        ),
    }
    for name, values in (("ttft", ttfts), ("itl", itls), ("e2e", e2es)):
        for label, fraction in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
            summary[f"{name}_{label}"] = percentile(values, fraction)
    return summary


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_table(summary: dict) -> str:
    lines = [
        f"requests {summary['requests']}, completed {summary['completed']}, "
        f"duration {summary['duration_s']:.1f} s, "
        f"throughput {summary['throughput_rps']:.2f} req/s, "
        f"{summary['output_tokens_per_s']:.1f} output tokens/s",
        "",
        f"{'latency (s)':<14}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for name, title in (("ttft", "TTFT"), ("itl", "inter-token"), ("e2e", "end-to-end")):
        row = [_seconds(summary[f"{name}_{label}"]) for label in ("p50", "p90", "p99")]
        lines.append(f"{title:<14}{row[0]:>10}{row[1]:>10}{row[2]:>10}")
    lines.append("")
    lines.append(
        f"SLO attainment {summary['slo_attainment'] * 100:.1f}% "
        f"(TTFT <= {summary['slo_ttft_s']} s and mean inter-token <= {summary['slo_itl_s']} s)"
    )
    errors = summary["errors"]
    if errors:
        listed = ", ".join(f"{kind} {count}" for kind, count in sorted(errors.items()))
        lines.append(f"errors: {listed}")
    else:
        lines.append("errors: none")
    if summary.get("short_outputs"):
        lines.append(
            f"short outputs: {counted(summary['short_outputs'], 'request')} got fewer tokens than "
            "max_tokens (the server may ignore ignore_eos)"
        )
    return "\n".join(lines)


def write_report(
    path: Path, summary: dict, results: list[RequestResult], queue: list[QueueSample], meta: dict
) -> None:
    document = {
        **summary,
        "meta": meta,
        "requests_detail": [asdict(result) for result in results],
        "queue_depth": [asdict(sample) for sample in queue],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(path: Path, results: list[RequestResult], queue: list[QueueSample]) -> None:
    """Save latency over time and, when sampled, queue depth per role over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if queue else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 3.2 * rows), sharex=True, squeeze=False)
    latency = axes[0][0]
    done = [result for result in results if result.error is None and result.ttft_s is not None]
    latency.scatter(
        [r.sent_at_s for r in done], [r.ttft_s for r in done], s=8, label="TTFT", alpha=0.7
    )
    latency.scatter(
        [r.sent_at_s for r in done],
        [r.e2e_s for r in done],
        s=8,
        label="end-to-end",
        alpha=0.5,
    )
    failed = [result for result in results if result.error is not None]
    if failed:
        latency.scatter(
            [r.sent_at_s for r in failed], [0] * len(failed), marker="x", color="red", label="error"
        )
    latency.set_ylabel("seconds")
    latency.set_title("Request latency by send time")
    latency.legend(loc="upper left")
    if queue:
        depth = axes[1][0]
        for role in sorted({sample.role for sample in queue}):
            points = [sample for sample in queue if sample.role == role]
            depth.step(
                [p.at_s for p in points], [p.depth for p in points], where="post", label=role
            )
        depth.set_ylabel("queue depth")
        depth.set_title("Queue depth per role (server /metrics)")
        depth.legend(loc="upper left")
    axes[-1][0].set_xlabel("seconds since replay start")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
