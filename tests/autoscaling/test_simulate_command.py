"""`disagg simulate` end to end: JSON report, table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from disagg_worker.cli import main
from disagg_worker.traces import synthetic_trace

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = REPO / "bench" / "calibration.json"
AZURE_TRACE = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
POLICIES = ("builtin", "static_peak", "static_mean", "utilisation")


@pytest.fixture
def mooncake_trace(tmp_path: Path) -> Path:
    trace = synthetic_trace(200, seed=3, max_prompt_tokens=4000, max_output_tokens=600)
    lines = [
        json.dumps(
            {
                "timestamp": round(r.arrival_s * 1000),
                "input_length": r.prompt_tokens,
                "output_length": r.output_tokens,
            }
        )
        for r in trace.requests
    ]
    path = tmp_path / "synthetic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_report_keys(mooncake_trace, capsys):
    argv = ["simulate", "--trace", str(mooncake_trace), "--format", "mooncake"]
    argv += ["--calibration", str(CALIBRATION), "--token-scale", "0.05", "--json"]

    code = main(argv)

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert tuple(report) == POLICIES
    for summary in report.values():
        assert 0.0 <= summary["slo_attainment"] <= 1.0
        assert set(summary["replica_seconds"]) == {"prefill", "decode", "total"}
        assert isinstance(summary["scale_events"], int)


def test_static_peak_costs_more_than_mean(mooncake_trace, capsys):
    argv = ["simulate", "--trace", str(mooncake_trace), "--calibration", str(CALIBRATION)]
    argv += ["--token-scale", "0.05", "--json", "--policies", "static_peak,static_mean"]

    main(argv)

    report = json.loads(capsys.readouterr().out)
    peak = report["static_peak"]["replica_seconds"]["total"]
    assert peak >= report["static_mean"]["replica_seconds"]["total"]


def test_table_and_plot(mooncake_trace, tmp_path, capsys):
    plot = tmp_path / "timeline.png"
    argv = ["simulate", "--trace", str(mooncake_trace), "--calibration", str(CALIBRATION)]
    argv += ["--token-scale", "0.05", "--plot", str(plot)]

    code = main(argv)

    captured = capsys.readouterr()
    assert code == 0
    assert "static_peak" in captured.out
    assert "builtin: simulating 200 requests" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not AZURE_TRACE.exists(), reason=f"trace not found at {AZURE_TRACE}")
def test_azure_trace_slice(capsys):
    argv = ["simulate", "--trace", str(AZURE_TRACE), "--format", "azure", "--json"]
    argv += ["--calibration", str(CALIBRATION), "--token-scale", "0.25", "--slo-ttft", "10"]
    argv += ["--max-requests", "3000", "--policies", "builtin,static_peak"]

    code = main(argv)

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["builtin"]["scale_events"] > 0
    assert report["builtin"]["slo_attainment"] > 0.9
