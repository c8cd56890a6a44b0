"""Trace reading as `disagg simulate` uses it, and the command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from disagg_worker.cli import main
from disagg_worker.traces import TraceError, read_trace

AZURE_ROWS = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,not-a-number,5
2023-11-16 18:15:52.2224670,879,55
"""

MOONCAKE_ROWS = """{"timestamp": 0, "input_length": 600, "output_length": 20, "hash_ids": [1]}
{"timestamp": 1500, "input_length": 80, "output_length": 4}
{"timestamp": 2000, "input_length": 80}
not json
{"timestamp": 2500, "input_length": 300, "output_length": 10}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_rows_and_times(tmp_path):
    trace = read_trace(write(tmp_path, "t.csv", AZURE_ROWS), "azure")

    assert [r.prompt_tokens for r in trace.requests] == [374, 396, 879]
    assert trace.requests[1].arrival_s == pytest.approx(4.314579)


def test_azure_malformed_row_counted(tmp_path):
    trace = read_trace(write(tmp_path, "t.csv", AZURE_ROWS), "azure")

    assert trace.skipped == 1
    assert trace.first_skipped_line == 4


def test_mooncake_rows_in_seconds(tmp_path):
    trace = read_trace(write(tmp_path, "t.jsonl", MOONCAKE_ROWS), "mooncake")

    assert [r.arrival_s for r in trace.requests] == [0.0, 1.5, 2.5]
    assert [r.output_tokens for r in trace.requests] == [20, 4, 10]


def test_mooncake_malformed_rows_counted(tmp_path):
    trace = read_trace(write(tmp_path, "t.jsonl", MOONCAKE_ROWS), "mooncake")

    assert trace.skipped == 2
    assert trace.first_skipped_line == 3


def test_missing_file_raises(tmp_path):
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path / "absent.csv", "azure")


def test_simulate_missing_trace_one_line(tmp_path, capsys):
    code = main(["simulate", "--trace", str(tmp_path / "absent.csv"), "--format", "azure"])

    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("disagg simulate: error: cannot read trace")
    assert error.count("\n") == 1


def test_simulate_invalid_calibration(tmp_path, capsys):
    trace = write(tmp_path, "t.jsonl", MOONCAKE_ROWS)
    calibration = write(tmp_path, "c.json", json.dumps({"prefill_tokens_per_second": -1}))

    code = main(["simulate", "--trace", str(trace), "--calibration", str(calibration)])

    assert code == 2
    error = capsys.readouterr().err
    assert "invalid prefill_tokens_per_second -1" in error
    assert "pass a valid file with --calibration" in error


def test_simulate_reports_skipped_rows(tmp_path, capsys):
    trace = write(tmp_path, "t.jsonl", MOONCAKE_ROWS)

    code = main(["simulate", "--trace", str(trace), "--calibration", "bench/calibration.json"])

    assert code == 0
    assert "skipped 2 malformed rows" in capsys.readouterr().err


def test_simulate_rejects_negative_min_replicas(tmp_path, capsys):
    trace = write(tmp_path, "t.jsonl", MOONCAKE_ROWS)

    code = main(["simulate", "--trace", str(trace), "--prefill-min-replicas", "-1"])

    assert code == 2
    assert "invalid prefill minReplicas -1" in capsys.readouterr().err


def test_simulate_rejects_unknown_policy(tmp_path, capsys):
    trace = write(tmp_path, "t.jsonl", MOONCAKE_ROWS)

    code = main(["simulate", "--trace", str(trace), "--policies", "builtin,hpa"])

    assert code == 2
    assert "invalid --policies 'builtin,hpa'" in capsys.readouterr().err
