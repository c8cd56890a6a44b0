"""Table-driven cases for the builtin autoscaling policy, one rule per case."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from disagg_operator.policy import (
    DECODE,
    PREFILL,
    AutoscalingSettings,
    Observation,
    PoolConfig,
    PoolHistory,
    PoolState,
    Recommendation,
    decide,
    decide_pool,
    record_decision,
)

NOW = 1000.0
SETTINGS = AutoscalingSettings(
    interval_seconds=15,
    scale_up_stabilization_seconds=0,
    scale_down_stabilization_seconds=300,
    max_step_replicas=4,
    tolerance=0.1,
)


def prefill_config(**changes) -> PoolConfig:
    fields = {"role": PREFILL, "min_replicas": 1, "max_replicas": 10, "target_queue_depth": 4}
    return PoolConfig(**(fields | changes))


def decode_config(**changes) -> PoolConfig:
    fields = {"role": DECODE, "min_replicas": 1, "max_replicas": 10, "target_queue_depth": 4}
    return PoolConfig(**(fields | changes))


def observations(*queue_depths: int, in_flight: int = 0, age: float = 0.0):
    return tuple(
        Observation(f"r{index}", depth, in_flight, NOW - age)
        for index, depth in enumerate(queue_depths)
    )


def history(*replicas_ago: tuple[int, float]) -> PoolHistory:
    return PoolHistory(tuple(Recommendation(NOW - ago, n) for n, ago in replicas_ago))


@dataclass(frozen=True)
class Case:
    name: str
    pool: PoolState
    desired: int
    reason_has: str
    settings: AutoscalingSettings = SETTINGS


CASES = [
    Case(
        "queue 11 on 1 replica target 4 → 3",
        PoolState(prefill_config(), 1, 1, observations(11)),
        3,
        "queue depth 11",
    ),
    Case(
        "queue 40 on 1 replica step 4 → 5",
        PoolState(prefill_config(), 1, 1, observations(40)),
        5,
        "step bound 4",
    ),
    Case(
        "queue 40 on 2 replicas max 6 → 6",
        PoolState(prefill_config(max_replicas=6), 2, 2, observations(20, 20)),
        6,
        "prefill 2→6",
    ),
    Case(
        "queue 4.3 per replica tolerance 0.1 → hold 2",
        PoolState(prefill_config(), 2, 2, observations(4, 4)),
        2,
        "within 0.1",
    ),
    Case(
        "queue 0 on 3 replicas window empty → 1",
        PoolState(prefill_config(), 3, 3, observations(0, 0, 0)),
        1,
        "prefill 3→1",
    ),
    Case(
        "queue 0 on 3 replicas, 3 recommended 200 s ago → hold 3",
        PoolState(prefill_config(), 3, 3, observations(0, 0, 0), history((3, 200))),
        3,
        "down window holds 3",
    ),
    Case(
        "queue 0 on 4 replicas, 2 recommended 200 s ago → 2",
        PoolState(prefill_config(), 4, 4, observations(0, 0, 0, 0), history((2, 200))),
        2,
        "down window holds 2",
    ),
    Case(
        "queue 0 on 3 replicas, 3 recommended 400 s ago → 1",
        PoolState(prefill_config(), 3, 3, observations(0, 0, 0), history((3, 400))),
        1,
        "prefill 3→1",
    ),
    Case(
        "queue 12 up window 60 s, 1 recommended 30 s ago → hold 1",
        PoolState(prefill_config(), 1, 1, observations(12), history((1, 30))),
        1,
        "up window holds 1",
        AutoscalingSettings(scale_up_stabilization_seconds=60),
    ),
    Case(
        "stale metrics 50 s old interval 15 → hold",
        PoolState(prefill_config(), 3, 3, observations(0, 0, 0, age=50)),
        3,
        "older than 45 s",
    ),
    Case(
        "no metrics on 2 ready replicas → hold",
        PoolState(prefill_config(), 2, 2, ()),
        2,
        "no metrics of 2 ready replicas",
    ),
    Case(
        "queue 0 from 1 of 3 ready replicas → hold",
        PoolState(prefill_config(), 3, 3, observations(0)),
        3,
        "metrics from 1 of 3",
    ),
    Case(
        "queue 20 from 1 of 2 ready replicas → 5",
        PoolState(prefill_config(), 2, 2, observations(20)),
        5,
        "partial metrics, scale-up only",
    ),
    Case(
        "in flight 3 target in flight 1 queue 0 → hold 3",
        PoolState(prefill_config(target_in_flight=1), 3, 3, observations(0, 0, 0, in_flight=1)),
        3,
        "in flight 3",
    ),
    Case(
        "decode in flight 48 on 2 target in flight 16 → 3",
        PoolState(decode_config(target_in_flight=16), 2, 2, observations(0, 0, in_flight=24)),
        3,
        "decode 2→3",
    ),
    Case(
        "decode queue 0 min 1 → 1",
        PoolState(decode_config(), 2, 2, observations(0, 0)),
        1,
        "decode 2→1",
    ),
    Case(
        "prefill at 0 with 5 fallbacks min 0 → 1",
        PoolState(prefill_config(min_replicas=0), 0, 0, local_prefill_fallbacks=5),
        1,
        "5 local-prefill fallbacks",
    ),
    Case(
        "prefill at 0 with 1 fallback min 0 → 1",
        PoolState(prefill_config(min_replicas=0), 0, 0, local_prefill_fallbacks=1),
        1,
        "1 local-prefill fallback with",
    ),
    Case(
        "prefill at 0 without fallbacks min 0 → 0",
        PoolState(prefill_config(min_replicas=0), 0, 0),
        0,
        "hold at 0",
    ),
    Case(
        "prefill idle on 1 replica min 0 → 0",
        PoolState(prefill_config(min_replicas=0, target_in_flight=1), 1, 1, observations(0)),
        0,
        "prefill 1→0",
    ),
    Case(
        "2 replicas starting none ready → hold 2",
        PoolState(prefill_config(), 2, 0),
        2,
        "waiting for start-up",
    ),
    Case(
        "queue 11 on 1 ready of 3 current → hold 3",
        PoolState(prefill_config(), 3, 1, observations(11)),
        3,
        "hold at 3",
    ),
    Case(
        "current 12 above max 10 → 10",
        PoolState(prefill_config(), 12, 12, observations(*[4] * 12)),
        10,
        "prefill 12→10",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_rule(case: Case):
    decision = decide_pool(NOW, case.pool, case.settings)

    assert decision.desired_replicas == case.desired, decision.reason
    assert case.reason_has in decision.reason
    assert "\n" not in decision.reason


def test_latest_scrape_per_replica_counts():
    scrapes = (Observation("r0", 40, 0, NOW - 15), Observation("r0", 11, 0, NOW))
    pool = PoolState(prefill_config(), 1, 1, scrapes)

    decision = decide_pool(NOW, pool, SETTINGS)

    assert decision.desired_replicas == 3


def test_reason_names_role_and_change():
    pool = PoolState(prefill_config(), 1, 1, observations(11))

    reason = decide_pool(NOW, pool, SETTINGS).reason

    assert reason.startswith("prefill 1→3: queue depth 11")


def test_hold_records_no_recommendation():
    pool = PoolState(prefill_config(), 2, 2, ())

    decision = decide_pool(NOW, pool, SETTINGS)

    assert decision.recommendation is None


def test_history_pruned_to_longest_window():
    old = history((5, 400), (4, 100))
    pool = PoolState(prefill_config(), 1, 1, observations(11), old)
    decision = decide_pool(NOW, pool, SETTINGS)

    updated = record_decision(old, decision, NOW, SETTINGS)

    assert [r.replicas for r in updated.recommendations] == [4, 3]
    assert updated.last_scale_time == NOW


def test_history_keeps_last_scale_time_on_hold():
    old = PoolHistory((), last_scale_time=NOW - 60)
    pool = PoolState(prefill_config(), 2, 2, observations(4, 4))
    decision = decide_pool(NOW, pool, SETTINGS)

    updated = record_decision(old, decision, NOW, SETTINGS)

    assert updated.last_scale_time == NOW - 60


def test_decide_uses_both_pools():
    prefill = PoolState(prefill_config(), 1, 1, observations(11))
    decode = PoolState(decode_config(), 2, 2, observations(0, 0))

    decisions = decide(NOW, prefill, decode, SETTINGS)

    assert decisions.prefill.desired_replicas == 3
    assert decisions.decode.desired_replicas == 1


def test_scale_down_waits_after_last_scale():
    old = PoolHistory((), last_scale_time=NOW - 100)
    pool = PoolState(prefill_config(), 3, 3, observations(0, 0, 0), old)

    decision = decide_pool(NOW, pool, SETTINGS)

    assert decision.desired_replicas == 3


def test_scale_down_after_window_since_last_scale():
    old = PoolHistory((), last_scale_time=NOW - 400)
    pool = PoolState(prefill_config(), 3, 3, observations(0, 0, 0), old)

    decision = decide_pool(NOW, pool, SETTINGS)

    assert decision.desired_replicas == 1
