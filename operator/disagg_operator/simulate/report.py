"""Turn simulation results into the JSON report, the summary table and the plot."""

from __future__ import annotations

from pathlib import Path

from disagg_operator.policy import DECODE, PREFILL
from disagg_operator.simulate.runner import RunResult


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction in [0, 1])."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def result_summary(result: RunResult) -> dict:
    """Return the JSON object of one run."""
    ttfts = [r.ttft for r in result.requests]
    itls = [r.itl for r in result.requests if r.output_tokens > 1] or [0.0]
    return {
        "slo_attainment": round(result.attainment(), 5),
        "ttft_attainment": round(result.attainment(itl=False), 5),
        "itl_attainment": round(result.attainment(ttft=False), 5),
        "replica_seconds": {key: round(value, 1) for key, value in result.replica_seconds.items()},
        "scale_events": result.scale_events["total"],
        "scale_events_per_pool": {
            PREFILL: result.scale_events[PREFILL],
            DECODE: result.scale_events[DECODE],
        },
        "max_replicas": {
            role: max((s.current_replicas[role] for s in result.timeline), default=0)
            for role in (PREFILL, DECODE)
        },
        "ttft_p50_seconds": round(percentile(ttfts, 0.50), 3),
        "ttft_p99_seconds": round(percentile(ttfts, 0.99), 3),
        "itl_p99_seconds": round(percentile(itls, 0.99), 4),
        "end_seconds": round(result.end_time, 1),
    }


def format_table(summaries: dict[str, dict], baseline: str = "static_peak") -> str:
    """Return a fixed-width table with one row per policy."""
    header = (
        f"{'policy':<12} {'SLO met':>8} {'TTFT met':>9} {'ITL met':>8} "
        f"{'prefill r·s':>12} {'decode r·s':>11} {'total r·s':>10} {'vs peak':>8} "
        f"{'events':>7} {'TTFT p99':>9} {'ITL p99':>8}"
    )
    lines = [header]
    reference = summaries.get(baseline, {}).get("replica_seconds", {}).get("total")
    for name, summary in summaries.items():
        seconds = summary["replica_seconds"]
        ratio = f"{seconds['total'] / reference:.0%}" if reference else "-"
        lines.append(
            f"{name:<12} {summary['slo_attainment']:>8.2%} {summary['ttft_attainment']:>9.2%} "
            f"{summary['itl_attainment']:>8.2%} {seconds[PREFILL]:>12.0f} "
            f"{seconds[DECODE]:>11.0f} {seconds['total']:>10.0f} {ratio:>8} "
            f"{summary['scale_events']:>7} {summary['ttft_p99_seconds']:>8.2f}s "
            f"{summary['itl_p99_seconds']:>7.3f}s"
        )
    return "\n".join(lines)


def plot_timeline(result: RunResult, path: Path, title: str) -> None:
    """Draw queue depth and replicas over time, one panel per pool, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    times = [sample.time / 60.0 for sample in result.timeline]
    figure, axes = pyplot.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for axis, role in zip(axes, (PREFILL, DECODE), strict=True):
        queue = [sample.queue_depth[role] for sample in result.timeline]
        current = [sample.current_replicas[role] for sample in result.timeline]
        ready = [sample.ready_replicas[role] for sample in result.timeline]
        axis.plot(times, queue, color="tab:orange", linewidth=0.8, label="queue depth (sum)")
        axis.set_ylabel(f"{role} queue depth")
        replicas_axis = axis.twinx()
        replicas_axis.step(times, current, where="post", color="tab:blue", label="current")
        replicas_axis.step(
            times, ready, where="post", color="tab:green", linestyle="--", label="ready"
        )
        replicas_axis.set_ylabel(f"{role} replicas")
        replicas_axis.set_ylim(bottom=0, top=max([*current, 1]) + 1)
        handles = axis.get_legend_handles_labels()[0] + replicas_axis.get_legend_handles_labels()[0]
        axis.legend(handles=handles, loc="upper left", fontsize=8)
    axes[-1].set_xlabel("trace time (minutes)")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
