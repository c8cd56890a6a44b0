"""Discrete-event simulator of both pools under a request trace.

`disagg simulate` uses `compare_policies` to run the builtin autoscaling
policy and three baselines over the same trace and cost model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from disagg_worker.text import counted
from disagg_worker.traces import TraceRequest

from disagg_operator.policy import DECODE, PREFILL, AutoscalingSettings, PoolConfig
from disagg_operator.simulate.calibration import Calibration
from disagg_operator.simulate.runner import Objectives, RunResult, simulate
from disagg_operator.simulate.scalers import (
    BuiltinScaler,
    StaticScaler,
    UtilisationScaler,
    size_static,
)

POLICY_NAMES = ("builtin", "static_peak", "static_mean", "utilisation")


@dataclass(frozen=True)
class SimulatedDeployment:
    """The DisaggregatedDeployment fields the simulation uses."""

    settings: AutoscalingSettings
    max_replicas: int = 64
    prefill_min_replicas: int = 1
    target_queue_depth: float = 4.0
    # Decode running requests counted as one replica of load, as a fraction
    # of the largest batch whose step meets the ITL objective.
    decode_in_flight_fraction: float = 0.75
    min_remote_prefill_tokens: int = 64
    # Per-pool scale-down windows; None uses the settings' window.
    prefill_scale_down_stabilization_seconds: float | None = None
    decode_scale_down_stabilization_seconds: float | None = None

    def pools(self, calibration: Calibration, objectives: Objectives) -> dict[str, PoolConfig]:
        """Return both pool configs; decode's targetInFlight follows from the ITL objective."""
        batch = calibration.batch_for_step_seconds(objectives.itl_seconds)
        return {
            PREFILL: PoolConfig(
                PREFILL,
                min_replicas=self.prefill_min_replicas,
                max_replicas=self.max_replicas,
                target_queue_depth=self.target_queue_depth,
                target_in_flight=1,
                scale_down_stabilization_seconds=self.prefill_scale_down_stabilization_seconds,
            ),
            DECODE: PoolConfig(
                DECODE,
                min_replicas=1,
                max_replicas=self.max_replicas,
                target_queue_depth=self.target_queue_depth,
                target_in_flight=max(1.0, batch * self.decode_in_flight_fraction),
                scale_down_stabilization_seconds=self.decode_scale_down_stabilization_seconds,
            ),
        }


def compare_policies(
    requests: list[TraceRequest],
    calibration: Calibration,
    objectives: Objectives,
    deployment: SimulatedDeployment,
    policies: tuple[str, ...] = POLICY_NAMES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, RunResult]:
    """Run each named policy over the trace. The autoscalers start at the static mean sizes."""
    sizes = size_static(requests, calibration, objectives.itl_seconds)
    pools = deployment.pools(calibration, objectives)
    scalers = {
        "builtin": lambda: BuiltinScaler(pools, deployment.settings, sizes.mean),
        "static_peak": lambda: StaticScaler("static_peak", sizes.peak),
        "static_mean": lambda: StaticScaler("static_mean", sizes.mean),
        "utilisation": lambda: UtilisationScaler(pools, calibration, sizes.mean),
    }
    results = {}
    for name in policies:
        if progress is not None:
            progress(f"{name}: simulating {counted(len(requests), 'request')}")
        results[name] = simulate(
            requests,
            calibration,
            scalers[name](),
            deployment.settings.interval_seconds,
            objectives,
            deployment.min_remote_prefill_tokens,
            progress,
        )
    return results
