"""Replica-seconds arithmetic and the sizing of the static baselines."""

from __future__ import annotations

import pytest
from disagg_operator.policy import DECODE, PREFILL
from disagg_operator.simulate.runner import Objectives, simulate
from disagg_operator.simulate.scalers import StaticScaler, size_static
from disagg_worker.traces import TraceRequest
from simulate_support import CALIBRATION

OBJECTIVES = Objectives(ttft_seconds=5, itl_seconds=0.3)


def test_static_replica_seconds_are_replicas_times_end():
    requests = [TraceRequest(0.0, 100, 5), TraceRequest(30.0, 100, 5)]
    scaler = StaticScaler("static", {PREFILL: 3, DECODE: 2})

    result = simulate(requests, CALIBRATION, scaler, 15.0, OBJECTIVES)

    # The last request finishes at 30 + 2.4 s.
    assert result.end_time == pytest.approx(32.4)
    assert result.replica_seconds[PREFILL] == pytest.approx(3 * 32.4)
    assert result.replica_seconds[DECODE] == pytest.approx(2 * 32.4)
    assert result.replica_seconds["total"] == pytest.approx(5 * 32.4)
    assert result.scale_events["total"] == 0


def test_static_sizes_from_trace_load():
    # Window 0-60 s: 12,000 prompt tokens = 120 prefill-seconds, so 2 replicas.
    # Window 60-120 s: 3,000 tokens = 30 s, so the mean over 120 s is 150/120, 2 replicas.
    requests = [TraceRequest(float(i), 1000, 1) for i in range(12)]
    requests += [TraceRequest(60.0 + i, 1000, 1) for i in range(3)]
    requests.append(TraceRequest(120.0, 1, 1))

    sizes = size_static(requests, CALIBRATION, slo_itl_seconds=0.3)

    assert sizes.peak[PREFILL] == 2
    assert sizes.mean[PREFILL] == 2
    assert sizes.peak[DECODE] == 1


def test_static_decode_size_uses_itl_batch():
    # ITL 0.2 s allows batch 4 (0.05 s a token): 2,400 tokens in 60 s is 2 replicas.
    requests = [TraceRequest(float(i), 1, 601) for i in range(4)]

    sizes = size_static(requests, CALIBRATION, slo_itl_seconds=0.2)

    assert sizes.peak[DECODE] == 2
