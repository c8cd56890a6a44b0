"""Table-driven cases for the shared GPU budget (maxTotalGPUs)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from disagg_operator.policy import (
    DECODE,
    PREFILL,
    AutoscalingSettings,
    Observation,
    PoolConfig,
    PoolState,
    decide,
)

NOW = 1000.0


def pool(role: str, current: int, queue_per_replica: int, minimum: int = 1, gpus: int = 1):
    config = PoolConfig(
        role=role,
        min_replicas=minimum,
        max_replicas=20,
        target_queue_depth=4,
        gpus_per_replica=gpus,
    )
    seen = tuple(Observation(f"{role}{i}", queue_per_replica, 0, NOW) for i in range(current))
    return PoolState(config, current, current, seen)


@dataclass(frozen=True)
class Case:
    name: str
    budget: int
    prefill: PoolState
    decode: PoolState
    prefill_desired: int
    decode_desired: int


CASES = [
    Case(
        "budget 8 fits 3 prefill + 3 decode → unchanged",
        8,
        pool(PREFILL, 1, 12),
        pool(DECODE, 1, 12),
        3,
        3,
    ),
    Case(
        "budget 4, both want 4 from 1 → 2 + 2",
        4,
        pool(PREFILL, 1, 16),
        pool(DECODE, 1, 16),
        2,
        2,
    ),
    Case(
        "budget 6, prefill wants 5 decode wants 2 from 1 → 4 + 2",
        6,
        pool(PREFILL, 1, 20),
        pool(DECODE, 1, 8),
        4,
        2,
    ),
    Case(
        "budget 5, prefill keeps its 3 current, decode wants 4 → 3 + 2",
        5,
        pool(PREFILL, 3, 4),
        pool(DECODE, 1, 16),
        3,
        2,
    ),
    Case(
        "budget 1 below minimums 1 + 1 → decode keeps 1, prefill 0",
        1,
        pool(PREFILL, 1, 4),
        pool(DECODE, 1, 4),
        0,
        1,
    ),
    Case(
        "budget 8, decode 2 GPUs wants 4, prefill wants 4 → 2 + 3",
        8,
        pool(PREFILL, 1, 16),
        pool(DECODE, 1, 16, gpus=2),
        2,
        3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_budget(case: Case):
    settings = AutoscalingSettings(max_total_gpus=case.budget)

    decisions = decide(NOW, case.prefill, case.decode, settings)

    assert decisions.prefill.desired_replicas == case.prefill_desired, decisions.prefill.reason
    assert decisions.decode.desired_replicas == case.decode_desired, decisions.decode.reason


def test_budget_reason_names_budget():
    settings = AutoscalingSettings(max_total_gpus=4)

    decisions = decide(NOW, pool(PREFILL, 1, 16), pool(DECODE, 1, 16), settings)

    assert "capped by maxTotalGPUs 4" in decisions.prefill.reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_replicas": 0, "role": DECODE}, "decode minReplicas 0"),
        ({"max_replicas": 0}, "maxReplicas 0"),
        ({"target_queue_depth": 0}, "targetQueueDepth 0"),
        ({"role": "router"}, "role 'router'"),
    ],
)
def test_pool_config_rejects(changes, message):
    fields = {"role": PREFILL, "min_replicas": 1, "max_replicas": 4, "target_queue_depth": 4}

    with pytest.raises(ValueError, match=message):
        PoolConfig(**(fields | changes))


def test_settings_reject_zero_step():
    with pytest.raises(ValueError, match="maxStepReplicas 0"):
        AutoscalingSettings(max_step_replicas=0)
