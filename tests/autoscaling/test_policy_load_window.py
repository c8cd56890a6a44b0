"""Table-driven cases for the load window, per-pool scale-down windows and the scale-down step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from disagg_operator.policy import (
    PREFILL,
    AutoscalingSettings,
    Observation,
    PoolConfig,
    PoolDecision,
    PoolHistory,
    PoolState,
    Recommendation,
    decide_pool,
    record_decision,
)

NOW = 1000.0
# Target queue depth 1, so a replica's queue depth is its load in replicas.
SETTINGS = AutoscalingSettings(
    interval_seconds=15, scale_down_stabilization_seconds=0, max_step_replicas=4, tolerance=0.1
)


def config(**changes) -> PoolConfig:
    fields = {"role": PREFILL, "min_replicas": 1, "max_replicas": 20, "target_queue_depth": 1}
    return PoolConfig(**(fields | changes))


def observations(*queue_depths: int):
    return tuple(Observation(f"r{i}", depth, 0, NOW) for i, depth in enumerate(queue_depths))


def loads(*load_ago: tuple[float, float], replicas: int = 1) -> PoolHistory:
    """A history of decisions that observed `load` `ago` seconds before NOW."""
    return PoolHistory(tuple(Recommendation(NOW - ago, replicas, load) for load, ago in load_ago))


@dataclass(frozen=True)
class Case:
    name: str
    pool: PoolState
    desired: int
    reason_has: str
    settings: AutoscalingSettings = SETTINGS


WINDOW_60 = AutoscalingSettings(
    interval_seconds=15, scale_down_stabilization_seconds=0, load_window_seconds=60
)

CASES = [
    Case(
        "window 0: load 2 on 6 replicas after loads 6, 6 → 2",
        PoolState(config(), 6, 6, observations(1, 1, 0, 0, 0, 0), loads((6, 15), (6, 30))),
        2,
        "load 2.00 replicas",
    ),
    Case(
        "window 60: load 2 on 6 replicas after loads 6, 6 → mean 4.67 → 5",
        PoolState(config(), 6, 6, observations(1, 1, 0, 0, 0, 0), loads((6, 15), (6, 30))),
        5,
        "load 2.00 averaged over 3 decisions",
        WINDOW_60,
    ),
    Case(
        "window 60: loads 90 s and 60 s ago are outside, load 2 on 6 → 2",
        PoolState(config(), 6, 6, observations(1, 1, 0, 0, 0, 0), loads((6, 60), (6, 90))),
        2,
        "load 2.00 replicas",
        WINDOW_60,
    ),
    Case(
        "window 60: load 9 on 2 replicas after loads 1, 1 → up at once to 6 (step 4)",
        PoolState(config(), 2, 2, observations(5, 4), loads((1, 15), (1, 30))),
        6,
        "step bound 4",
        WINDOW_60,
    ),
    Case(
        "window 60: held decisions without a load are skipped, load 2 on 6 after 6 → 4",
        PoolState(
            config(),
            6,
            6,
            observations(1, 1, 0, 0, 0, 0),
            PoolHistory((Recommendation(NOW - 15, 6, 6), Recommendation(NOW - 30, 6))),
        ),
        4,
        "averaged over 2 decisions",
        WINDOW_60,
    ),
    Case(
        "pool window 30 under settings window 300: 6 recommended 60 s ago, load 2 → 2",
        PoolState(
            config(scale_down_stabilization_seconds=30),
            6,
            6,
            observations(2, 0, 0, 0, 0, 0),
            PoolHistory((Recommendation(NOW - 60, 6),)),
        ),
        2,
        "prefill 6→2",
        AutoscalingSettings(scale_down_stabilization_seconds=300),
    ),
    Case(
        "pool window 300 over settings window 30: 6 recommended 60 s ago, load 2 → hold 6",
        PoolState(
            config(scale_down_stabilization_seconds=300),
            6,
            6,
            observations(2, 0, 0, 0, 0, 0),
            PoolHistory((Recommendation(NOW - 60, 6),)),
        ),
        6,
        "down window holds 6",
        AutoscalingSettings(scale_down_stabilization_seconds=30),
    ),
    Case(
        "scale-down step 1, step 4: load 1 on 6 replicas → 5",
        PoolState(config(), 6, 6, observations(1, 0, 0, 0, 0, 0)),
        5,
        "step bound 1",
        AutoscalingSettings(scale_down_stabilization_seconds=0, max_scale_down_step_replicas=1),
    ),
    Case(
        "scale-down step 1, step 4: load 12 on 2 replicas → 6",
        PoolState(config(), 2, 2, observations(6, 6)),
        6,
        "step bound 4",
        AutoscalingSettings(scale_down_stabilization_seconds=0, max_scale_down_step_replicas=1),
    ),
    Case(
        "scale-down step unset, step 4: load 1 on 6 replicas → 2",
        PoolState(config(), 6, 6, observations(1, 0, 0, 0, 0, 0)),
        2,
        "step bound 4",
        AutoscalingSettings(scale_down_stabilization_seconds=0),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_decide_pool(case: Case) -> None:
    decision = decide_pool(NOW, case.pool, case.settings)
    assert decision.desired_replicas == case.desired, decision.reason
    assert case.reason_has in decision.reason


def test_recommendation_records_observed_load_not_mean() -> None:
    pool = PoolState(config(), 6, 6, observations(1, 1, 0, 0, 0, 0), loads((6, 15), (6, 30)))
    decision = decide_pool(NOW, pool, WINDOW_60)
    assert decision.recommendation.load == pytest.approx(2.0)


def test_record_decision_keeps_loads_within_window_120() -> None:
    settings = AutoscalingSettings(scale_down_stabilization_seconds=30, load_window_seconds=120)
    decision = PoolDecision(PREFILL, 2, 2, "hold", Recommendation(NOW, 2, 2.0))
    updated = record_decision(loads((5, 100), (5, 130)), decision, NOW, settings)
    assert [r.time for r in updated.recommendations] == [NOW - 100, NOW]


def test_record_decision_keeps_pool_window_300() -> None:
    settings = AutoscalingSettings(scale_down_stabilization_seconds=30)
    decision = PoolDecision(PREFILL, 2, 2, "hold", Recommendation(NOW, 2, 2.0))
    pool = config(scale_down_stabilization_seconds=300)
    updated = record_decision(loads((5, 200), (5, 400)), decision, NOW, settings, pool)
    assert [r.time for r in updated.recommendations] == [NOW - 200, NOW]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"load_window_seconds": -1}, "invalid loadWindowSeconds -1"),
        ({"max_scale_down_step_replicas": 0}, "invalid maxScaleDownStepReplicas 0"),
    ],
    ids=["load window -1", "scale-down step 0"],
)
def test_invalid_settings(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoscalingSettings(**changes)


def test_invalid_pool_scale_down_window_minus_5() -> None:
    with pytest.raises(ValueError, match="invalid prefill scaleDownStabilizationSeconds -5"):
        config(scale_down_stabilization_seconds=-5)
