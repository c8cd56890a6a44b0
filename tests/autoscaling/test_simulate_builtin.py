"""The builtin policy driven by the simulator: scale-up, scale-down and scale from zero."""

from __future__ import annotations

from disagg_operator.policy import DECODE, PREFILL, AutoscalingSettings
from disagg_operator.simulate import SimulatedDeployment
from disagg_operator.simulate.runner import Objectives, simulate
from disagg_operator.simulate.scalers import BuiltinScaler
from disagg_worker.traces import TraceRequest
from simulate_support import CALIBRATION

OBJECTIVES = Objectives(ttft_seconds=5, itl_seconds=0.3)
SETTINGS = AutoscalingSettings(scale_down_stabilization_seconds=60, max_step_replicas=4)


def run_builtin(requests, prefill_min_replicas: int, initial: dict[str, int]):
    deployment = SimulatedDeployment(SETTINGS, prefill_min_replicas=prefill_min_replicas)
    pools = deployment.pools(CALIBRATION, OBJECTIVES)
    scaler = BuiltinScaler(pools, SETTINGS, initial)
    return simulate(requests, CALIBRATION, scaler, SETTINGS.interval_seconds, OBJECTIVES)


def burst(start: float, count: int, per_second: float) -> list[TraceRequest]:
    return [TraceRequest(start + i / per_second, 100, 2) for i in range(count)]


def test_burst_scales_prefill_up_then_down():
    # 3 requests/s of 1 s prefill for 2 minutes, then a trickle for 5 minutes.
    requests = burst(0.0, 360, 3.0) + burst(120.0, 30, 0.1)

    result = run_builtin(requests, 1, {PREFILL: 1, DECODE: 1})

    prefill = [sample.current_replicas[PREFILL] for sample in result.timeline]
    assert max(prefill) >= 3
    assert prefill[-1] == 1


def test_prefill_scales_from_zero_on_fallbacks():
    # Idle for 2 minutes, then requests long enough for remote prefill.
    requests = [TraceRequest(0.0, 100, 2), *burst(120.0, 120, 1.0)]

    result = run_builtin(requests, 0, {PREFILL: 0, DECODE: 1})

    prefill = {sample.time: sample.current_replicas[PREFILL] for sample in result.timeline}
    remote = [r for r in result.requests if r.remote_prefill]
    # Samples precede each decision: the first fallback shows as 1 replica at
    # 30 s, which idles back to 0 before the burst.
    assert prefill[30.0] == 1
    assert prefill[105.0] == 0
    assert max(replicas for time, replicas in prefill.items() if time > 120.0) >= 1
    assert remote


def test_builtin_records_reasons():
    requests = burst(0.0, 360, 3.0)

    result = run_builtin(requests, 1, {PREFILL: 1, DECODE: 1})

    assert any(reason.startswith("prefill 1→") for _, reason in result.reasons)
