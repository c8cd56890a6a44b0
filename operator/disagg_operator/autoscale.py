"""The operator's autoscaling loop: one tick per resource every autoscaling.intervalSeconds.

The kopf daemon in `handlers.py` calls `tick` for each DisaggregatedDeployment
whose `spec.autoscaling.mode` is builtin or external, with a `state` dict that
persists between the ticks of that resource. What a tick does by mode:

- builtin: observe both worker pools, run the scaling policy
  (`policy.decide`), patch `spec.replicas` of each worker Deployment whose
  desired replicas differ, record a `Scaled` event for each change and write
  the pools' desiredReplicas, queueDepth, lastScaleTime and lastScaleReason
  into the status.
- external: observe both pools and write only their queueDepth, because an
  HPA or KEDA owns the replicas.
- off: nothing; each pool keeps spec.<pool>.replicas.

The policy works in wall-clock seconds (`time.time()`), because the status
keeps the last scale time as a timestamp. An operator that restarts reads it
back, so its scale-down window still starts at the last scale and it does not
shrink a pool that it just grew.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import constants as c
from . import kube as kube_module
from . import spec as spec_module
from . import status as status_module
from .builders.meta import Owner, selector
from .metrics_source import MetricsSource, PodScrapeSource, PodTarget
from .policy import (
    AutoscalingSettings,
    Decisions,
    Observation,
    PoolConfig,
    PoolDecision,
    PoolHistory,
    PoolState,
    decide,
    record_decision,
)

module_logger = logging.getLogger(__name__)

# Key of the `AutoscalerState` in the daemon's per-resource state dict.
STATE_KEY = "autoscaler"


@dataclasses.dataclass
class AutoscalerState:
    """The state that the loop of one resource keeps between ticks."""

    # Decision history per worker role; a role is absent until its first tick.
    histories: dict[str, PoolHistory] = dataclasses.field(default_factory=dict)
    # Last read total of local prefills for want of a prefill replica, per
    # router pod; None until the first read, which only sets the baseline.
    router_totals: dict[str, float] | None = None
    # Last logged decision reason per role, so an unchanged hold logs once.
    last_reasons: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PoolObservation:
    """One pool as read in one tick: its Deployment, ready pods and their metrics."""

    role: str
    deployment: Mapping[str, Any]
    ready_pods: tuple[PodTarget, ...]
    observations: tuple[Observation, ...]

    @property
    def current_replicas(self) -> int:
        replicas = (self.deployment.get("spec") or {}).get("replicas")
        return c.DEFAULT_POOL_REPLICAS if replicas is None else int(replicas)

    @property
    def ready_replicas(self) -> int:
        # The larger of the two counts, so a ready pod missing from either
        # count reads as missing data (no scale-down) rather than as a
        # replica without load.
        reported = int((self.deployment.get("status") or {}).get("readyReplicas") or 0)
        return max(reported, len(self.ready_pods))

    @property
    def queue_depth(self) -> int | None:
        """Waiting requests summed over the pods that returned metrics; None if none did."""
        if not self.ready_pods:
            return 0
        if not self.observations:
            return None
        return sum(observation.queue_depth for observation in self.observations)


def policy_inputs(
    parsed: spec_module.DeploymentSpec,
) -> tuple[dict[str, PoolConfig], AutoscalingSettings]:
    """Map a parsed spec to the policy's pool configs (by role) and settings."""
    configs = {}
    for role in c.WORKER_ROLES:
        pool = parsed.pool(role)
        configs[role] = PoolConfig(
            role=role,
            min_replicas=pool.min_replicas,
            max_replicas=pool.max_replicas,
            target_queue_depth=float(pool.target_queue_depth),
            target_in_flight=pool.target_in_flight,
            gpus_per_replica=pool.gpus_per_replica,
            scale_down_stabilization_seconds=_optional_float(pool.scale_down_stabilization_seconds),
        )
    scaling = parsed.autoscaling
    settings = AutoscalingSettings(
        interval_seconds=float(scaling.interval_seconds),
        scale_up_stabilization_seconds=float(scaling.scale_up_stabilization_seconds),
        scale_down_stabilization_seconds=float(scaling.scale_down_stabilization_seconds),
        max_step_replicas=scaling.max_step_replicas,
        tolerance=scaling.tolerance,
        max_total_gpus=scaling.max_total_gpus,
        load_window_seconds=float(scaling.load_window_seconds),
        max_scale_down_step_replicas=scaling.max_scale_down_step_replicas,
    )
    return configs, settings


def _optional_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Return whether a pod serves: Ready condition true, an IP, and not terminating."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or ()
    )


def ready_targets(pods: Sequence[Mapping[str, Any]], role: str, port: int) -> tuple[PodTarget, ...]:
    """Return the ready pods among `pods` as scrape targets on `port`, sorted by name."""
    targets = [
        PodTarget(name=pod["metadata"]["name"], ip=pod["status"]["podIP"], port=port, role=role)
        for pod in pods
        if is_ready(pod)
    ]
    return tuple(sorted(targets, key=lambda target: target.name))


def parse_time(value: Any) -> float | None:
    """Return an RFC 3339 timestamp of the API as seconds since the epoch, None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        module_logger.warning("invalid timestamp %r; ignored", value)
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def format_time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def initial_history(
    pool_status: Mapping[str, Any] | None, deployment: Mapping[str, Any]
) -> PoolHistory:
    """Return the history of a pool that this process has not decided for yet.

    The last scale time comes from the status (written by an earlier
    operator process), else from the Deployment's creation time. The policy
    counts the current replicas as recommended at that time, which keeps a
    pool at its size for the scale-down window after a restart or a create.
    """
    last = parse_time((pool_status or {}).get("lastScaleTime"))
    if last is None:
        last = parse_time((deployment.get("metadata") or {}).get("creationTimestamp"))
    return PoolHistory(last_scale_time=last)


def count_fallbacks(
    previous: Mapping[str, float] | None, totals: Mapping[str, float | None]
) -> tuple[int, dict[str, float]]:
    """Return the local-prefill fallbacks since `previous`, and the new baseline.

    Without a previous read the count is 0: the counters' past is unknown. A
    router pod first seen now counts its whole total (it started since the
    last read), and a counter that went down counts from 0 (its router
    restarted). A router that did not respond keeps its old baseline.
    """
    baseline: dict[str, float] = {}
    fallbacks = 0.0
    for pod, total in totals.items():
        before = previous.get(pod) if previous is not None else None
        if total is None:
            if before is not None:
                baseline[pod] = before
            continue
        baseline[pod] = total
        if previous is None:
            continue
        if before is None or total < before:
            fallbacks += total
        else:
            fallbacks += total - before
    return round(fallbacks), baseline


class _Tick:
    """One tick of one resource: the reads, the decision and the writes."""

    def __init__(
        self,
        kube: kube_module.Kube,
        body: Mapping[str, Any],
        state: AutoscalerState,
        log: logging.Logger | Any,
        source: MetricsSource,
        now: float,
    ) -> None:
        self.kube = kube
        self.body = body
        self.state = state
        self.log = log
        self.source = source
        self.now = now
        self.owner = Owner.from_body(body)

    async def read_pools(
        self, parsed: spec_module.DeploymentSpec
    ) -> dict[str, PoolObservation] | None:
        """Read both pools' Deployments, ready pods and metrics; None if a Deployment is absent."""
        deployments = {}
        pods: dict[str, tuple[PodTarget, ...]] = {}
        for role in c.WORKER_ROLES:
            name = c.child_name(self.owner.name, role)
            deployment = await self.kube.get(kube_module.DEPLOYMENTS, self.owner.namespace, name)
            if deployment is None:
                self.log.info(
                    "autoscaler tick skipped: Deployment %s not found; next tick retries", name
                )
                return None
            deployments[role] = deployment
            listed = await self.kube.list(
                kube_module.PODS, self.owner.namespace, selector(self.owner, role)
            )
            pods[role] = ready_targets(listed, role, parsed.metrics_port)

        everyone = [pod for role in c.WORKER_ROLES for pod in pods[role]]
        observed = await self.source.observe(everyone, self.now)
        pools = {}
        for role in c.WORKER_ROLES:
            observations = tuple(
                observation
                for pod in pods[role]
                if (observation := observed.get(pod.name)) is not None
            )
            pools[role] = PoolObservation(role, deployments[role], pods[role], observations)
        return pools

    async def read_fallbacks(self, parsed: spec_module.DeploymentSpec) -> int:
        """Return the router's local prefills for want of a prefill replica since the last tick."""
        listed = await self.kube.list(
            kube_module.PODS, self.owner.namespace, selector(self.owner, c.ROLE_ROUTER)
        )
        routers = ready_targets(listed, c.ROLE_ROUTER, parsed.router.port)
        totals = await self.source.local_prefill_totals(routers)
        fallbacks, self.state.router_totals = count_fallbacks(self.state.router_totals, totals)
        return fallbacks

    def history(self, pool: PoolObservation) -> PoolHistory:
        history = self.state.histories.get(pool.role)
        if history is None:
            pool_status = (self.body.get("status") or {}).get(pool.role)
            history = initial_history(pool_status, pool.deployment)
        return history

    def pool_state(self, pool: PoolObservation, config: PoolConfig, fallbacks: int) -> PoolState:
        return PoolState(
            config=config,
            current_replicas=pool.current_replicas,
            ready_replicas=pool.ready_replicas,
            observations=pool.observations,
            history=self.history(pool),
            local_prefill_fallbacks=fallbacks if pool.role == c.ROLE_PREFILL else 0,
        )

    async def scale(self, decision: PoolDecision) -> bool:
        """Set the Deployment's replicas to the decision; return False (logged) on failure.

        The JSON patch tests the replicas it read first, so a change by
        someone else since then fails with 422 instead of being overwritten.
        """
        name = c.child_name(self.owner.name, decision.role)
        operations = [
            {"op": "test", "path": "/spec/replicas", "value": decision.current_replicas},
            {"op": "replace", "path": "/spec/replicas", "value": decision.desired_replicas},
        ]
        try:
            await self.kube.patch(kube_module.DEPLOYMENTS, self.owner.namespace, name, operations)
        except kube_module.ApiError as error:
            self.log.warning(
                "scaling failed deployment=%s replicas=%d->%d: %s; next tick decides again",
                name,
                decision.current_replicas,
                decision.desired_replicas,
                error,
            )
            await self.kube.post_event(
                self.body,
                event_type=c.EVENT_WARNING,
                reason=c.REASON_SCALE_FAILED,
                message=f"{decision.reason}; patch of Deployment {name} failed: {error}",
            )
            return False
        self.log.info(
            "scaled deployment=%s replicas=%d->%d",
            name,
            decision.current_replicas,
            decision.desired_replicas,
        )
        await self.kube.post_event(
            self.body, event_type=c.EVENT_NORMAL, reason=c.REASON_SCALED, message=decision.reason
        )
        return True

    def log_decision(self, decision: PoolDecision) -> None:
        """Log a decision at info when its reason changed since the last tick, else at debug."""
        if self.state.last_reasons.get(decision.role) == decision.reason:
            self.log.debug("autoscaler decision: %s", decision.reason)
            return
        self.state.last_reasons[decision.role] = decision.reason
        self.log.info("autoscaler decision: %s", decision.reason)

    async def write_status(self, pools: Mapping[str, Mapping[str, Any]]) -> None:
        """Merge-patch the pools' autoscaler fields into the status when they changed."""
        patch = status_module.merge_patch(self.body.get("status"), pools)
        if patch is None:
            return
        await self.kube.patch(
            kube_module.DISAGGREGATED_DEPLOYMENTS,
            self.owner.namespace,
            self.owner.name,
            {"status": patch},
            subresource="status",
        )


async def _apply_decisions(
    run: _Tick,
    decisions: Decisions,
    pools: Mapping[str, PoolObservation],
    settings: AutoscalingSettings,
) -> dict[str, dict[str, Any]]:
    """Scale the pools whose replicas change, update the histories, return the status fields."""
    fields: dict[str, dict[str, Any]] = {}
    for role in c.WORKER_ROLES:
        decision = decisions.for_role(role)
        run.log_decision(decision)
        pool_fields: dict[str, Any] = {"queueDepth": pools[role].queue_depth}
        if decision.scaled and not await run.scale(decision):
            # Not applied: remember the recommendation, not a scale.
            decision = dataclasses.replace(decision, desired_replicas=decision.current_replicas)
        if decision.scaled:
            pool_fields["lastScaleTime"] = format_time(run.now)
            pool_fields["lastScaleReason"] = decision.reason
        pool_fields["desiredReplicas"] = decision.desired_replicas
        history = run.history(pools[role])
        run.state.histories[role] = record_decision(history, decision, run.now, settings)
        fields[role] = pool_fields
    return fields


async def tick(
    *,
    kube: kube_module.Kube,
    body: Mapping[str, Any],
    state: dict[str, Any],
    logger: logging.Logger | Any = module_logger,
    source: MetricsSource | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Observe, decide and scale one resource once.

    Steps:
    1. parse the spec; an invalid one or mode off does nothing;
    2. read both worker Deployments, their ready pods and each pod's metrics;
    3. external mode: write the queue depths to the status and stop;
    4. builtin mode: read the router's local-prefill fallbacks when prefill
       may scale from 0, run the policy, patch the Deployments that change,
       record events and the history, and write the status.

    API errors of the reads are logged and end the tick; the next tick reads
    afresh. `source` defaults to scraping each pod's /metrics.
    """
    autoscaler: AutoscalerState = state.setdefault(STATE_KEY, AutoscalerState())
    parsed, problems = spec_module.load(body)
    if parsed is None or problems:
        # The reconcile reports the problems (InvalidSpec); nothing to scale meanwhile.
        logger.debug("autoscaler skips a resource with an invalid spec")
        return
    mode = parsed.autoscaling.mode
    if mode == c.AUTOSCALING_OFF:
        state[STATE_KEY] = AutoscalerState()
        return

    run = _Tick(kube, body, autoscaler, logger, source or PodScrapeSource(), clock())
    try:
        pools = await run.read_pools(parsed)
        if pools is None:
            return
        if mode == c.AUTOSCALING_EXTERNAL:
            # An HPA or KEDA owns the replicas; only report what it scales on.
            await run.write_status(
                {role: {"queueDepth": pools[role].queue_depth} for role in c.WORKER_ROLES}
            )
            return

        configs, settings = policy_inputs(parsed)
        fallbacks = 0
        if configs[c.ROLE_PREFILL].min_replicas == 0:
            fallbacks = await run.read_fallbacks(parsed)
        decisions = decide(
            run.now,
            run.pool_state(pools[c.ROLE_PREFILL], configs[c.ROLE_PREFILL], fallbacks),
            run.pool_state(pools[c.ROLE_DECODE], configs[c.ROLE_DECODE], 0),
            settings,
        )
        fields = await _apply_decisions(run, decisions, pools, settings)
        await run.write_status(fields)
    except kube_module.ApiError as error:
        logger.warning(
            "autoscaler tick failed: %s; next tick in %s s",
            error,
            parsed.autoscaling.interval_seconds,
        )
