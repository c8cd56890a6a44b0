"""Run one scaler against a trace through the cluster model and collect results."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from disagg_worker.traces import TraceRequest

from disagg_operator.policy import DECODE, PREFILL
from disagg_operator.simulate.calibration import Calibration
from disagg_operator.simulate.cluster import Cluster, SimRequest

logger = logging.getLogger(__name__)

ROLES = (PREFILL, DECODE)


@dataclass(frozen=True)
class Objectives:
    """Service-level objectives per request, in seconds."""

    ttft_seconds: float
    itl_seconds: float


@dataclass(frozen=True)
class Sample:
    """Both pools at one tick: summed queue depth, current and ready replicas."""

    time: float
    queue_depth: dict[str, int]
    current_replicas: dict[str, int]
    ready_replicas: dict[str, int]


@dataclass
class RunResult:
    name: str
    requests: list[SimRequest]
    objectives: Objectives
    end_time: float
    replica_seconds: dict[str, float]
    scale_events: dict[str, int]
    timeline: list[Sample] = field(default_factory=list)
    reasons: list[tuple[float, str]] = field(default_factory=list)

    def attainment(self, ttft: bool = True, itl: bool = True) -> float:
        """Return the fraction of requests that meet the selected objectives."""
        met = 0
        for request in self.requests:
            ok_ttft = not ttft or request.ttft <= self.objectives.ttft_seconds
            ok_itl = not itl or request.itl <= self.objectives.itl_seconds
            met += ok_ttft and ok_itl
        return met / len(self.requests)


def simulate(
    requests: list[TraceRequest],
    calibration: Calibration,
    scaler,
    interval_seconds: float,
    objectives: Objectives,
    min_remote_prefill_tokens: int = 64,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Serve `requests` with `scaler` deciding replicas every `interval_seconds`.

    1. Schedule every arrival; start the scaler's initial replicas ready.
    2. Each tick: run events up to it, sample both pools, ask the scaler,
       add or remove replicas.
    3. Stop once every request has finished; replicas count until then.
    """
    cluster = Cluster(calibration, scaler.initial, min_remote_prefill_tokens)
    sim_requests = [
        SimRequest(index, r.arrival_s, r.prompt_tokens, r.output_tokens)
        for index, r in enumerate(requests)
    ]
    for request in sim_requests:
        cluster.schedule(request.arrival, cluster.arrive, request)

    timeline: list[Sample] = []
    scale_events = {PREFILL: 0, DECODE: 0}
    last_arrival = sim_requests[-1].arrival
    tick = interval_seconds
    next_report = 0.0
    while cluster.completed < len(sim_requests):
        if not cluster.events:
            raise RuntimeError(
                f"simulation of {scaler.name} stalled at {tick:.0f} s with "
                f"{len(sim_requests) - cluster.completed} requests unfinished"
            )
        cluster.run_until(tick)
        views = {role: cluster.view(role) for role in ROLES}
        timeline.append(
            Sample(
                time=tick,
                queue_depth={
                    role: sum(o.queue_depth for o in views[role].observations) for role in ROLES
                },
                current_replicas={role: views[role].current_replicas for role in ROLES},
                ready_replicas={role: views[role].ready_replicas for role in ROLES},
            )
        )
        desired = scaler.tick(tick, views)
        for role in ROLES:
            if desired[role] != views[role].current_replicas:
                scale_events[role] += 1
                cluster.set_replicas(role, desired[role])
        if progress is not None and tick >= next_report:
            progress(
                f"{scaler.name}: {tick:.0f} s simulated (last arrival at {last_arrival:.0f} s), "
                f"{cluster.completed}/{len(sim_requests)} requests done"
            )
            next_report = tick + 600.0
        tick += interval_seconds

    end_time = max(request.finish for request in sim_requests)
    if progress is not None:
        progress(
            f"{scaler.name}: done, {len(sim_requests)}/{len(sim_requests)} requests "
            f"in {end_time:.0f} s simulated"
        )
    replica_seconds = {role: cluster.replica_seconds(role, end_time) for role in ROLES}
    replica_seconds["total"] = replica_seconds[PREFILL] + replica_seconds[DECODE]
    scale_events_total = dict(scale_events)
    scale_events_total["total"] = scale_events[PREFILL] + scale_events[DECODE]
    logger.info(
        "simulation done scaler=%s requests=%d end_s=%.0f", scaler.name, len(sim_requests), end_time
    )
    return RunResult(
        name=scaler.name,
        requests=sim_requests,
        objectives=objectives,
        end_time=end_time,
        replica_seconds=replica_seconds,
        scale_events=scale_events_total,
        timeline=timeline,
        reasons=list(getattr(scaler, "reasons", [])),
    )
