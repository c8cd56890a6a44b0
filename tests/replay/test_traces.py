"""Trace readers, the synthetic workload and request planning (no server)."""

from __future__ import annotations

import json

import pytest
from disagg_worker.replay.workload import plan_requests
from disagg_worker.traces import (
    AZURE_CONV_OUTPUT_QUANTILES,
    AZURE_CONV_PROMPT_QUANTILES,
    Trace,
    TraceError,
    TraceRequest,
    read_trace,
    synthetic_trace,
)

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_azure_rows_and_arrivals(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(
        AZURE_HEADER
        + "2023-11-16 18:15:46.6805900,374,44\n"
        + "2023-11-16 18:15:50.9951690,396,109\n"
    )
    trace = read_trace(path)
    assert [request.prompt_tokens for request in trace.requests] == [374, 396]
    assert trace.requests[1].arrival_s == pytest.approx(4.314579)
    assert trace.skipped == 0


def test_azure_malformed_rows_skipped_with_line(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(
        AZURE_HEADER
        + "2023-11-16 18:15:46.68,374,44\n"
        + "not a time,1,1\n"
        + "2023-11-16 18:15:47.00,-5,1\n"
        + "2023-11-16 18:15:48.00,10\n"
        + "2023-11-16 18:15:49.00,10,3\n"
    )
    trace = read_trace(path)
    assert len(trace.requests) == 2
    assert trace.skipped == 3
    assert trace.first_skipped_line == 3


def test_mooncake_rows(tmp_path):
    path = tmp_path / "trace.jsonl"
    rows = [
        {"timestamp": 1000, "input_length": 50, "output_length": 5, "hash_ids": [1]},
        {"timestamp": 2500, "input_length": 70, "output_length": 7},
        {"timestamp": "soon", "input_length": 70, "output_length": 7},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    trace = read_trace(path, "mooncake")
    assert [request.arrival_s for request in trace.requests] == [0.0, 1.5]
    assert trace.first_skipped_line == 3


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(TraceError, match=r"cannot read trace .*missing\.csv"):
        read_trace(tmp_path / "missing.csv")


def test_wrong_header_names_expected(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(TraceError, match="expected header TIMESTAMP"):
        read_trace(path)


def test_unknown_suffix_asks_for_format(tmp_path):
    path = tmp_path / "trace.txt"
    path.write_text("x")
    with pytest.raises(TraceError, match="--format"):
        read_trace(path)


def test_no_valid_rows_is_error(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(AZURE_HEADER + "bad,row,here\n")
    with pytest.raises(TraceError, match="no valid azure rows"):
        read_trace(path)


def _quantile(values, fraction):
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))]


@pytest.mark.parametrize(
    ("attribute", "quantiles"),
    [
        ("prompt_tokens", AZURE_CONV_PROMPT_QUANTILES),
        ("output_tokens", AZURE_CONV_OUTPUT_QUANTILES),
    ],
)
def test_synthetic_lengths_near_published_quantiles(attribute, quantiles):
    trace = synthetic_trace(20000, seed=1)
    values = [getattr(request, attribute) for request in trace.requests]
    # A three-point lognormal fit: within 25% of each published quantile.
    for fraction, published in quantiles.items():
        assert _quantile(values, fraction) == pytest.approx(published, rel=0.25), fraction


def test_synthetic_rate_near_azure():
    trace = synthetic_trace(20000, seed=1)
    rate = len(trace.requests) / trace.requests[-1].arrival_s
    assert rate == pytest.approx(5.5, rel=0.05)


def test_plan_scales_time_and_tokens():
    trace = Trace([TraceRequest(0.0, 100, 10), TraceRequest(4.0, 200, 20)])
    planned = plan_requests(trace, time_scale=2.0, token_scale=0.5)
    assert [request.send_at_s for request in planned] == [0.0, 2.0]
    assert [len(request.prompt_ids) for request in planned] == [50, 100]
    assert [request.max_tokens for request in planned] == [5, 10]


def test_plan_clips_to_context():
    trace = Trace([TraceRequest(0.0, 9000, 100)])
    (planned,) = plan_requests(trace, max_context=8192)
    assert len(planned.prompt_ids) + planned.max_tokens == 8192
    assert planned.clipped


def test_plan_duration_and_max_requests():
    trace = Trace([TraceRequest(float(second), 10, 1) for second in range(10)])
    assert len(plan_requests(trace, duration_s=4.5)) == 5
    assert len(plan_requests(trace, max_requests=3)) == 3
