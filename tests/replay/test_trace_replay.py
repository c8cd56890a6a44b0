"""`disagg replay` against a real `disagg serve`: a trace slice, the synthetic workload."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serve.harness import ServeProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURE_TRACE = REPO_ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
SUMMARY_KEYS = ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "slo_attainment", "errors")


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "disagg_worker", "replay", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    process = ServeProcess(
        ["--prefill-replicas", "1", "--decode-replicas", "1", "--min-remote-prefill-tokens", "16"],
        tmp_path_factory.mktemp("serve") / "serve.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.mark.model
@pytest.mark.skipif(not AZURE_TRACE.is_file(), reason=f"trace {AZURE_TRACE} is absent")
def test_azure_slice_completes_with_report(serve, tmp_path):
    report_path, plot_path = tmp_path / "report.json", tmp_path / "latency.png"
    result = replay(
        "--url", serve.url, "--trace", str(AZURE_TRACE), "--max-requests", "10",
        "--token-scale", "0.03", "--time-scale", "2",
        "--report", str(report_path), "--plot", str(plot_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    for key in SUMMARY_KEYS:
        assert key in report, key
    assert report["completed"] == report["requests"] == 10
    assert report["errors"] == {}
    assert report["short_outputs"] == 0
    assert len(report["requests_detail"]) == 10
    assert {sample["role"] for sample in report["queue_depth"]} == {"prefill", "decode"}
    assert plot_path.stat().st_size > 0
    assert "TTFT" in result.stdout


@pytest.mark.model
def test_synthetic_workload_completes(serve, tmp_path):
    report_path = tmp_path / "report.json"
    result = replay(
        "--url", serve.url, "--max-requests", "4", "--token-scale", "0.02",
        "--time-scale", "4", "--report", str(report_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["completed"] == 4
    assert "synthetic" in report["meta"]["trace"]


def test_unreadable_trace_is_one_line_error(tmp_path):
    result = replay("--url", "http://127.0.0.1:9", "--trace", str(tmp_path / "absent.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot read trace" in result.stderr


def test_malformed_rows_reported(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\nbad,1,1\n")
    result = replay("--url", "http://127.0.0.1:9", "--trace", str(trace))
    assert result.returncode == 2
    assert "no valid azure rows (1 malformed, first on line 2)" in result.stderr


def test_unreachable_server_is_one_line_error(tmp_path):
    result = replay("--url", "http://127.0.0.1:9", "--max-requests", "1")
    assert result.returncode == 2
    assert "cannot" in result.stderr
    assert "Traceback" not in result.stderr
