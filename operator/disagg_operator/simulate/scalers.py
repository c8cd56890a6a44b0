"""Scalers the simulator compares: the builtin policy and three baselines.

Each scaler returns the initial replicas per pool and, at every tick, the
desired replicas per pool. `BuiltinScaler` calls the real policy in
`disagg_operator.policy` exactly as the operator does; the baselines are:

- static at the peak need and static at the mean need (`size_static`);
- a utilisation threshold policy (`UtilisationScaler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from disagg_worker.traces import TraceRequest

from disagg_operator.policy import (
    DECODE,
    PREFILL,
    AutoscalingSettings,
    PoolConfig,
    PoolHistory,
    PoolState,
    decide,
    record_decision,
)
from disagg_operator.simulate.calibration import Calibration
from disagg_operator.simulate.cluster import PoolView

# Width of the windows over which the static baselines measure the peak need.
NEED_WINDOW_SECONDS = 60.0


class BuiltinScaler:
    """The builtin policy, with its decision history kept between ticks."""

    name = "builtin"

    def __init__(
        self, pools: dict[str, PoolConfig], settings: AutoscalingSettings, initial: dict[str, int]
    ) -> None:
        self.pools = pools
        self.settings = settings
        self.initial = dict(initial)
        # The pools were created with their initial replicas at time 0.
        self.history = {
            PREFILL: PoolHistory(last_scale_time=0.0),
            DECODE: PoolHistory(last_scale_time=0.0),
        }
        self.reasons: list[tuple[float, str]] = []

    def tick(self, now: float, views: dict[str, PoolView]) -> dict[str, int]:
        states = {
            role: PoolState(
                config=self.pools[role],
                current_replicas=view.current_replicas,
                ready_replicas=view.ready_replicas,
                observations=view.observations,
                history=self.history[role],
                local_prefill_fallbacks=view.local_prefill_fallbacks,
            )
            for role, view in views.items()
        }
        decisions = decide(now, states[PREFILL], states[DECODE], self.settings)
        desired = {}
        for role in (PREFILL, DECODE):
            decision = decisions.for_role(role)
            self.history[role] = record_decision(
                self.history[role], decision, now, self.settings, self.pools[role]
            )
            if decision.scaled:
                self.reasons.append((now, decision.reason))
            desired[role] = decision.desired_replicas
        return desired


class StaticScaler:
    """Fixed replicas per pool for the whole run."""

    def __init__(self, name: str, replicas: dict[str, int]) -> None:
        self.name = name
        self.initial = dict(replicas)

    def tick(self, now: float, views: dict[str, PoolView]) -> dict[str, int]:
        return dict(self.initial)


@dataclass(frozen=True)
class UtilisationThresholds:
    # Busy fraction above which one replica is added, below which one is removed.
    scale_up_above: float = 0.8
    scale_down_below: float = 0.3
    # Seconds after any scale event before a scale-down.
    scale_down_cooldown_seconds: float = 300.0


class UtilisationScaler:
    """Add one replica above a busy fraction, remove one below another.

    Busy fraction per ready replica: prefill is busy while it runs a prefill,
    decode by its running requests over `max_batch_size`. It is sampled at
    each tick, as a utilisation metric scraped at the same interval would be.
    """

    name = "utilisation"

    def __init__(
        self,
        pools: dict[str, PoolConfig],
        calibration: Calibration,
        initial: dict[str, int],
        thresholds: UtilisationThresholds = UtilisationThresholds(),
    ) -> None:
        self.pools = pools
        self.max_batch = calibration.max_batch_size
        self.initial = dict(initial)
        self.thresholds = thresholds
        self.last_scale = {PREFILL: -math.inf, DECODE: -math.inf}

    def tick(self, now: float, views: dict[str, PoolView]) -> dict[str, int]:
        desired = {}
        for role, view in views.items():
            config = self.pools[role]
            current = view.current_replicas
            desired[role] = current
            if view.ready_replicas == 0:
                # Prefill at zero: start one on any local-prefill fallback.
                if current == 0 and view.local_prefill_fallbacks > 0:
                    desired[role] = 1
                continue
            capacity = 1 if role == PREFILL else self.max_batch
            # Queued requests count as busy: a replica with a queue is saturated.
            busy = sum(min(o.in_flight + o.queue_depth, capacity) for o in view.observations)
            utilisation = busy / (capacity * view.ready_replicas)
            cooled = now - self.last_scale[role] >= self.thresholds.scale_down_cooldown_seconds
            if utilisation > self.thresholds.scale_up_above:
                desired[role] = min(config.max_replicas, current + 1)
            elif utilisation < self.thresholds.scale_down_below and cooled:
                floor = max(config.min_replicas, 1 if role == DECODE else 0)
                desired[role] = max(floor, current - 1)
            if desired[role] != current:
                self.last_scale[role] = now
        return desired


@dataclass(frozen=True)
class StaticSizes:
    peak: dict[str, int]
    mean: dict[str, int]


def size_static(
    requests: list[TraceRequest], calibration: Calibration, slo_itl_seconds: float
) -> StaticSizes:
    """Size the static baselines from the trace's offered load.

    The need of a pool in a window is the replica-seconds of work arriving in
    it, divided by the window length. Prefill work is prompt tokens over
    prefill tokens/s. Decode work is output tokens times the per-token cost at
    the largest batch whose step meets the ITL objective. Peak is the max over
    NEED_WINDOW_SECONDS windows, mean is over the whole trace, both rounded up.
    """
    batch = calibration.batch_for_step_seconds(slo_itl_seconds)
    decode_seconds_per_token = calibration.step_seconds(batch) / batch
    duration = max(requests[-1].arrival_s, NEED_WINDOW_SECONDS)
    windows = int(duration // NEED_WINDOW_SECONDS) + 1
    prefill_work = [0.0] * windows
    decode_work = [0.0] * windows
    for request in requests:
        window = int(request.arrival_s // NEED_WINDOW_SECONDS)
        prefill_work[window] += calibration.prefill_seconds(request.prompt_tokens)
        decode_work[window] += max(0, request.output_tokens - 1) * decode_seconds_per_token

    def need(work: float, seconds: float) -> int:
        return max(1, math.ceil(work / seconds))

    return StaticSizes(
        peak={
            PREFILL: need(max(prefill_work), NEED_WINDOW_SECONDS),
            DECODE: need(max(decode_work), NEED_WINDOW_SECONDS),
        },
        mean={
            PREFILL: need(sum(prefill_work), duration),
            DECODE: need(sum(decode_work), duration),
        },
    )
