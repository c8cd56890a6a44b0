"""The builtin autoscaling policy: queue depth in, desired replicas per pool out.

Pure functions over frozen dataclasses: no I/O and no clock. The caller (the
operator's autoscaling loop, `disagg serve` or the simulator) collects the
observations, passes the current time as `now` in seconds on any monotonic
scale, applies the decisions and keeps the history with `record_decision`.

Rules, in the order `decide` applies them to each pool:

1. Load. Per pool, the load in replicas is
   `queue depth / targetQueueDepth + in flight / targetInFlight`, summed over
   the fresh observations. `targetInFlight` is optional: without it only the
   queue depth counts (the contract of `targetQueueDepth`). Prefill runs one
   request at a time, so `targetInFlight: 1` counts the running prefill as one
   replica's worth of load, and a pool that keeps up, with an empty queue,
   keeps its replicas instead of reading zero. For decode it is the batch size per replica
   that meets the inter-token latency objective. With `load_window_seconds`,
   the load is the mean of the loads of the decisions within that window, the
   current one included, and never below the current load.
2. Metrics. Only the latest observation of each replica counts. One older
   than `metrics_max_age_seconds` (default three intervals) is stale and
   ignored. With fewer fresh observations than ready
   replicas the data is partial: the policy never scales down on it, but it
   scales up when the observed load alone already exceeds the band, because
   the missing replicas can only add load.
3. Tolerance. No change from the current replicas while
   `load / ready replicas` is within `1 ± tolerance`.
4. Bounds. The recommendation is `ceil(load)` clamped to
   `[minReplicas, maxReplicas]`; decode never goes below 1.
5. Stabilization (as the Kubernetes HPA does it): a scale-up goes to the
   lowest recommendation within `scaleUpStabilizationSeconds`, a scale-down
   to the highest recommendation within `scaleDownStabilizationSeconds`. The
   current replicas count as recommended at the last scale time, which the
   caller sets to the creation time of a new deployment. A pool's own
   `scale_down_stabilization_seconds` replaces the settings' window.
6. Step. One decision changes a pool by at most `maxStepReplicas` replicas,
   and removes at most `max_scale_down_step_replicas` when that is set.
7. Scale from zero. A prefill pool at 0 ready replicas has no queue to
   observe; the router prefills those requests locally on decode replicas
   and counts them (`disagg_local_prefill_total{reason="no_prefill_replica"}`).
   Any such fallback since the last decision recommends 1 replica; once one
   is ready, its queue depth drives the pool.
8. GPU budget (`maxTotalGPUs`, shared by both pools), see `_apply_gpu_budget`:
   decode keeps its minimum first (it cannot be 0), then prefill its minimum,
   then each pool keeps the replicas it already has and still wants, and the
   remaining GPUs go one replica at a time to the pool with the larger
   relative shortfall `(desired - granted) / desired`, decode on a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

PREFILL = "prefill"
DECODE = "decode"
ROLES = (PREFILL, DECODE)

# Stale after this many intervals when `metrics_max_age_seconds` is unset.
STALE_INTERVALS = 3.0


@dataclass(frozen=True)
class Observation:
    """One scrape of one ready replica."""

    replica: str
    queue_depth: int
    in_flight: int
    # Seconds on the same scale as `now`.
    time: float


@dataclass(frozen=True)
class PoolConfig:
    """The scaling fields of one pool spec."""

    role: str
    min_replicas: int
    max_replicas: int
    # Waiting requests per replica that the pool is sized for.
    target_queue_depth: float
    # Running requests per replica counted as one replica of load; None ignores in flight.
    target_in_flight: float | None = None
    gpus_per_replica: int = 1
    # This pool's scale-down window; None means the settings' window.
    scale_down_stabilization_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"invalid role {self.role!r}: expected one of {', '.join(ROLES)}")
        floor = 1 if self.role == DECODE else 0
        if self.min_replicas < floor:
            raise ValueError(
                f"invalid {self.role} minReplicas {self.min_replicas}: must be at least {floor}"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"invalid {self.role} maxReplicas {self.max_replicas}: "
                f"below minReplicas {self.min_replicas}"
            )
        if self.target_queue_depth <= 0:
            raise ValueError(
                f"invalid {self.role} targetQueueDepth {self.target_queue_depth}: must be above 0"
            )
        if self.target_in_flight is not None and self.target_in_flight <= 0:
            raise ValueError(
                f"invalid {self.role} targetInFlight {self.target_in_flight}: must be above 0"
            )
        if self.gpus_per_replica < 0:
            raise ValueError(
                f"invalid {self.role} GPUs per replica {self.gpus_per_replica}: must be 0 or more"
            )
        window = self.scale_down_stabilization_seconds
        if window is not None and window < 0:
            raise ValueError(
                f"invalid {self.role} scaleDownStabilizationSeconds {window}: must be 0 or more"
            )


@dataclass(frozen=True)
class AutoscalingSettings:
    """The `spec.autoscaling` fields the policy reads."""

    interval_seconds: float = 15.0
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    max_step_replicas: int = 4
    tolerance: float = 0.1
    max_total_gpus: int | None = None
    # None means STALE_INTERVALS * interval_seconds.
    metrics_max_age_seconds: float | None = None
    # Average the load of the decisions within this many seconds; 0 uses the latest only.
    load_window_seconds: float = 0.0
    # Max replicas removed per decision; None means max_step_replicas.
    max_scale_down_step_replicas: int | None = None

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0:
            raise ValueError(f"invalid intervalSeconds {self.interval_seconds}: must be above 0")
        if self.max_step_replicas < 1:
            raise ValueError(f"invalid maxStepReplicas {self.max_step_replicas}: must be 1 or more")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"invalid tolerance {self.tolerance}: must be in [0, 1)")
        if self.max_total_gpus is not None and self.max_total_gpus < 0:
            raise ValueError(f"invalid maxTotalGPUs {self.max_total_gpus}: must be 0 or more")
        if self.load_window_seconds < 0:
            raise ValueError(
                f"invalid loadWindowSeconds {self.load_window_seconds}: must be 0 or more"
            )
        down_step = self.max_scale_down_step_replicas
        if down_step is not None and down_step < 1:
            raise ValueError(f"invalid maxScaleDownStepReplicas {down_step}: must be 1 or more")

    @property
    def max_metrics_age(self) -> float:
        if self.metrics_max_age_seconds is not None:
            return self.metrics_max_age_seconds
        return STALE_INTERVALS * self.interval_seconds

    @property
    def scale_down_step(self) -> int:
        if self.max_scale_down_step_replicas is not None:
            return self.max_scale_down_step_replicas
        return self.max_step_replicas


@dataclass(frozen=True)
class Recommendation:
    """A raw recommendation (before stabilization and step) and when it was made."""

    time: float
    replicas: int
    # The load in replicas observed at `time`, before averaging; None when not known.
    load: float | None = None


@dataclass(frozen=True)
class PoolHistory:
    """The decision history of one pool, kept by the caller between decisions."""

    recommendations: tuple[Recommendation, ...] = ()
    last_scale_time: float | None = None


@dataclass(frozen=True)
class PoolState:
    """Everything the policy reads about one pool at one decision."""

    config: PoolConfig
    current_replicas: int
    ready_replicas: int
    observations: tuple[Observation, ...] = ()
    history: PoolHistory = field(default_factory=PoolHistory)
    # Prefill only: requests prefilled locally because no prefill replica was
    # ready, since the previous decision.
    local_prefill_fallbacks: int = 0


@dataclass(frozen=True)
class PoolDecision:
    """The outcome for one pool."""

    role: str
    current_replicas: int
    desired_replicas: int
    # One line with the numbers behind the decision.
    reason: str
    # The raw recommendation to remember, None when the policy held for lack of data.
    recommendation: Recommendation | None

    @property
    def scaled(self) -> bool:
        return self.desired_replicas != self.current_replicas


@dataclass(frozen=True)
class Decisions:
    prefill: PoolDecision
    decode: PoolDecision

    def for_role(self, role: str) -> PoolDecision:
        return self.prefill if role == PREFILL else self.decode


def decide(
    now: float, prefill: PoolState, decode: PoolState, settings: AutoscalingSettings
) -> Decisions:
    """Decide the desired replicas of both pools at time `now`."""
    prefill_decision = decide_pool(now, prefill, settings)
    decode_decision = decide_pool(now, decode, settings)
    if settings.max_total_gpus is None:
        return Decisions(prefill_decision, decode_decision)
    return _apply_gpu_budget(
        settings.max_total_gpus, (prefill, prefill_decision), (decode, decode_decision)
    )


def decide_pool(now: float, pool: PoolState, settings: AutoscalingSettings) -> PoolDecision:
    """Decide one pool's desired replicas, ignoring the GPU budget."""
    config = pool.config
    role = config.role
    current = pool.current_replicas
    ready = pool.ready_replicas

    # 1. A prefill pool with no ready replica scales from the router's fallbacks.
    if ready == 0:
        return _decide_without_ready_replicas(now, pool, settings)

    # 2. Load from the latest fresh observation of each replica. Stale ones are dropped.
    latest: dict[str, Observation] = {}
    for observation in pool.observations:
        seen = latest.get(observation.replica)
        if seen is None or observation.time > seen.time:
            latest[observation.replica] = observation
    fresh = [o for o in latest.values() if now - o.time <= settings.max_metrics_age]
    observed_load = sum(_replica_load(o, config) for o in fresh)
    load, averaged = _window_load(now, observed_load, pool.history, settings)
    queue = sum(o.queue_depth for o in fresh)
    in_flight = sum(o.in_flight for o in fresh)
    observed = (
        f"queue depth {queue}, in flight {in_flight} on {len(fresh)} of {ready} ready replicas"
    )
    if averaged > 1:
        observed += f", load {observed_load:.2f} averaged over {averaged} decisions"
    targets = f"target {config.target_queue_depth:g}"
    if config.target_in_flight is not None:
        targets += f", in flight target {config.target_in_flight:g}"
    partial = len(fresh) < ready

    # 3. Tolerance band around the ready replicas.
    ratio = load / ready
    if abs(ratio - 1.0) <= settings.tolerance:
        raw = _clamp(current, config)
        reason_core = f"load {load:.2f} within {settings.tolerance:g} of {ready} ready replicas"
    else:
        raw = _clamp(math.ceil(load - 1e-9), config)
        reason_core = f"load {load:.2f} replicas"

    # 4. Partial or missing data: scale up only, never down.
    if partial and raw <= current:
        stale = len(latest) - len(fresh)
        missing = "no metrics" if not pool.observations else f"metrics from {len(fresh)}"
        detail = f"{missing} of {ready} ready replicas"
        if stale:
            detail += f" ({stale} older than {settings.max_metrics_age:g} s)"
        return PoolDecision(
            role, current, current, f"{role} hold at {current}: {detail}, no scale-down", None
        )

    # 5. Stabilization windows, then the step bound.
    recommendation = Recommendation(now, raw, observed_load)
    window = (*pool.history.recommendations, recommendation)
    if raw > current:
        since = now - settings.scale_up_stabilization_seconds
        stabilized = max(min(r.replicas for r in window if r.time >= since), current)
    elif raw < current:
        # The replicas set at the last scale time count as recommended then,
        # so a pool is not shrunk right after it was created or scaled.
        since = now - _scale_down_window(config, settings)
        last = pool.history.last_scale_time
        if last is not None:
            window = (*window, Recommendation(last, current))
        stabilized = min(max(r.replicas for r in window if r.time >= since), current)
    else:
        stabilized = current
    step = settings.max_step_replicas if stabilized > current else settings.scale_down_step
    desired = max(current - step, min(current + step, stabilized))

    reason = f"{observed}, {targets}: {reason_core}"
    if partial:
        reason += " (partial metrics, scale-up only)"
    if stabilized != raw:
        kind = "up" if raw > current else "down"
        reason += f"; {kind} window holds {stabilized}"
    if desired != stabilized:
        reason += f"; step bound {step}"
    head = f"{role} {current}→{desired}" if desired != current else f"{role} hold at {current}"
    return PoolDecision(role, current, desired, f"{head}: {reason}", recommendation)


def record_decision(
    history: PoolHistory,
    decision: PoolDecision,
    now: float,
    settings: AutoscalingSettings,
    config: PoolConfig | None = None,
) -> PoolHistory:
    """Return the history after `decision` was applied at `now`, pruned to the longest window.

    Pass the pool's `config` when it sets its own scale-down window.
    """
    down = settings.scale_down_stabilization_seconds
    if config is not None:
        down = _scale_down_window(config, settings)
    keep_since = now - max(
        settings.scale_up_stabilization_seconds,
        settings.scale_down_stabilization_seconds,
        down,
        settings.load_window_seconds,
    )
    recommendations = tuple(r for r in history.recommendations if r.time >= keep_since)
    if decision.recommendation is not None:
        recommendations += (decision.recommendation,)
    last_scale_time = now if decision.scaled else history.last_scale_time
    return PoolHistory(recommendations, last_scale_time)


def _replica_load(observation: Observation, config: PoolConfig) -> float:
    load = observation.queue_depth / config.target_queue_depth
    if config.target_in_flight is not None:
        load += observation.in_flight / config.target_in_flight
    return load


def _window_load(
    now: float, observed: float, history: PoolHistory, settings: AutoscalingSettings
) -> tuple[float, int]:
    """Return the load to decide on and how many decisions it averages.

    The mean load of the decisions within the load window, now included, but
    never below the observed load: a rise scales up at once, a fall is followed
    only as far as the mean falls.
    """
    if settings.load_window_seconds <= 0:
        return observed, 1
    since = now - settings.load_window_seconds
    loads = [r.load for r in history.recommendations if r.load is not None and r.time > since]
    loads.append(observed)
    mean = sum(loads) / len(loads)
    if observed >= mean:
        return observed, 1
    return mean, len(loads)


def _scale_down_window(config: PoolConfig, settings: AutoscalingSettings) -> float:
    if config.scale_down_stabilization_seconds is not None:
        return config.scale_down_stabilization_seconds
    return settings.scale_down_stabilization_seconds


def _clamp(replicas: int, config: PoolConfig) -> int:
    floor = max(config.min_replicas, 1 if config.role == DECODE else 0)
    return max(floor, min(config.max_replicas, replicas))


def _decide_without_ready_replicas(
    now: float, pool: PoolState, settings: AutoscalingSettings
) -> PoolDecision:
    config = pool.config
    role = config.role
    current = pool.current_replicas

    # Replicas are starting: wait for them rather than stacking more on no data.
    if current > 0:
        floor = _clamp(current, config)
        if floor != current:
            reason = f"{role} {current}→{floor}: no ready replica, bounds {config.min_replicas}"
            reason += f"..{config.max_replicas}"
            return PoolDecision(role, current, floor, reason, None)
        reason = f"{role} hold at {current}: no ready replica yet, waiting for start-up"
        return PoolDecision(role, current, current, reason, None)

    # At zero: only prefill gets here (decode's minimum is 1), and only the
    # router's local-prefill fallbacks show demand.
    fallbacks = pool.local_prefill_fallbacks
    raw = _clamp(1 if fallbacks > 0 else 0, config)
    recommendation = Recommendation(now, raw)
    if raw == 0:
        reason = f"{role} hold at 0: no local-prefill fallbacks since the last decision"
        return PoolDecision(role, 0, 0, reason, recommendation)
    desired = min(raw, settings.max_step_replicas)
    if fallbacks > 0:
        noun = "fallback" if fallbacks == 1 else "fallbacks"
        reason = f"{role} 0→{desired}: {fallbacks} local-prefill {noun} with no prefill replica"
    else:
        reason = f"{role} 0→{desired}: minReplicas {config.min_replicas}"
    return PoolDecision(role, 0, desired, reason, recommendation)


def _apply_gpu_budget(
    budget: int,
    prefill: tuple[PoolState, PoolDecision],
    decode: tuple[PoolState, PoolDecision],
) -> Decisions:
    """Cap both pools' desired replicas so their GPUs fit in `budget`.

    1. Within budget: nothing changes.
    2. Decode gets its minimum first, then prefill its minimum, each as far as
       the budget goes.
    3. Each pool keeps the replicas it has now and still wants, decode first.
    4. The rest goes one replica at a time to the pool with the larger relative
       shortfall `(desired - granted) / desired`; decode wins a tie.
    """
    pools = {DECODE: decode, PREFILL: prefill}
    requested = {role: decision.desired_replicas for role, (_, decision) in pools.items()}
    gpus = {role: state.config.gpus_per_replica for role, (state, _) in pools.items()}
    if sum(requested[r] * gpus[r] for r in ROLES) <= budget:
        return Decisions(prefill[1], decode[1])

    granted = {DECODE: 0, PREFILL: 0}
    left = budget

    def grant(role: str, up_to: int) -> None:
        nonlocal left
        per = gpus[role]
        room = up_to - granted[role] if per == 0 else min(up_to - granted[role], left // per)
        if room > 0:
            granted[role] += room
            left -= room * per

    for role in (DECODE, PREFILL):
        grant(role, min(requested[role], pools[role][0].config.min_replicas))
    for role in (DECODE, PREFILL):
        grant(role, min(requested[role], pools[role][0].current_replicas))
    while True:
        open_roles = [r for r in (DECODE, PREFILL) if granted[r] < requested[r] and gpus[r] <= left]
        if not open_roles:
            break
        role = max(open_roles, key=lambda r: (requested[r] - granted[r]) / requested[r])
        grant(role, granted[role] + 1)

    capped = []
    for role in (PREFILL, DECODE):
        decision = pools[role][1]
        if granted[role] == requested[role]:
            capped.append(decision)
            continue
        current = decision.current_replicas
        line = (
            f"{role} {current}→{granted[role]}: wants {requested[role]}, capped by maxTotalGPUs "
            f"{budget} ({granted[PREFILL]} prefill x {gpus[PREFILL]} + "
            f"{granted[DECODE]} decode x {gpus[DECODE]} GPUs)"
        )
        capped.append(replace(decision, desired_replicas=granted[role], reason=line))
    return Decisions(*capped)
