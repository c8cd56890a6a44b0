"""The autoscaling loop of `disagg serve`: the cluster's policy over local processes.

`disagg serve --prefill-min/--prefill-max/--decode-min/--decode-max` calls
`LocalAutoscaler.tick()` every interval. A tick does what the operator's
tick (`disagg_operator.autoscale`) does for one DisaggregatedDeployment, with
an actuator in place of the Kubernetes API:

1. ask the actuator for each pool's current replicas and the metrics
   targets of its ready replicas (each worker's /metrics on 127.0.0.1);
2. scrape them with the operator's `PodScrapeSource`; a replica whose scrape
   fails counts as missing data, so the policy never scales its pool
   down on that tick;
3. when prefill may scale from 0, read the router's local-prefill fallbacks
   since the last tick;
4. run `policy.decide`, call `actuator.scale(role, replicas)` for each pool
   that changes, print each change (and each hold for missing metrics, once
   per streak) as one line, and record the history.

The loop uses the monotonic clock: nothing outlives the serve process, and
the start counts as the last scale time, so a pool keeps its initial size
for the scale-down window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .autoscale import count_fallbacks
from .metrics_source import MetricsSource, PodScrapeSource, PodTarget
from .policy import (
    DECODE,
    PREFILL,
    ROLES,
    AutoscalingSettings,
    Decisions,
    PoolConfig,
    PoolDecision,
    PoolHistory,
    PoolState,
    decide,
    record_decision,
)

logger = logging.getLogger(__name__)


class LocalActuator(Protocol):
    """Read and scale the local pools; `disagg serve` implements it over processes."""

    def current_replicas(self, role: str) -> int:
        """Return the replicas of `role` that the router may route to, ready or starting."""
        ...

    def ready_targets(self, role: str) -> Sequence[PodTarget]:
        """Return the metrics targets of the ready replicas of `role`."""
        ...

    def router_target(self) -> PodTarget | None:
        """Return the router's metrics target, None while it does not run."""
        ...

    def scale(self, role: str, replicas: int) -> None:
        """Start replicas of `role`, or retire some, until `replicas` remain. May raise OSError."""
        ...


@dataclasses.dataclass(frozen=True)
class LocalPools:
    """The policy inputs of `disagg serve`: both pool configs and the settings."""

    prefill: PoolConfig
    decode: PoolConfig
    settings: AutoscalingSettings

    def config(self, role: str) -> PoolConfig:
        return self.prefill if role == PREFILL else self.decode


class LocalAutoscaler:
    """Observe, decide and scale the local pools, one tick at a time."""

    def __init__(
        self,
        pools: LocalPools,
        actuator: LocalActuator,
        *,
        source: MetricsSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] = print,
    ) -> None:
        self.pools = pools
        self.actuator = actuator
        self.source = source or PodScrapeSource()
        self.clock = clock
        self.emit = emit
        started = clock()
        self.histories = {role: PoolHistory(last_scale_time=started) for role in ROLES}
        # The router's fallback counter at the last read; None until the first.
        self.router_totals: dict[str, float] | None = None
        # Roles whose last printed line was a hold for missing metrics.
        self._holding: set[str] = set()

    def tick(self) -> Decisions:
        """Run one observe-decide-scale round and return the decisions (after failed scales)."""
        return asyncio.run(self._tick())

    async def _tick(self) -> Decisions:
        now = self.clock()
        states = {}
        for role in ROLES:
            current = self.actuator.current_replicas(role)
            targets = list(self.actuator.ready_targets(role))
            observed = await self.source.observe(targets, now)
            observations = tuple(o for t in targets if (o := observed.get(t.name)) is not None)
            states[role] = PoolState(
                config=self.pools.config(role),
                current_replicas=current,
                ready_replicas=len(targets),
                observations=observations,
                history=self.histories[role],
            )
        if self.pools.prefill.min_replicas == 0:
            fallbacks = await self._read_fallbacks()
            states[PREFILL] = dataclasses.replace(
                states[PREFILL], local_prefill_fallbacks=fallbacks
            )

        decisions = decide(now, states[PREFILL], states[DECODE], self.pools.settings)
        applied = [self._apply(decisions.for_role(role), now) for role in ROLES]
        return Decisions(*applied)

    async def _read_fallbacks(self) -> int:
        router = self.actuator.router_target()
        totals = await self.source.local_prefill_totals([router] if router else [])
        fallbacks, self.router_totals = count_fallbacks(self.router_totals, totals)
        return fallbacks

    def _apply(self, decision: PoolDecision, now: float) -> PoolDecision:
        """Scale one pool when the decision changes it, print the line, and record the history."""
        role = decision.role
        logger.debug("autoscaler decision: %s", decision.reason)
        if decision.scaled:
            try:
                self.actuator.scale(role, decision.desired_replicas)
            except OSError as error:
                logger.error(
                    "scaling failed pool=%s replicas=%d->%d: %s; next tick decides again",
                    role,
                    decision.current_replicas,
                    decision.desired_replicas,
                    error,
                )
                decision = dataclasses.replace(decision, desired_replicas=decision.current_replicas)
            else:
                self._holding.discard(role)
                self.emit(decision.reason)
        elif decision.recommendation is None and decision.current_replicas > 0:
            # A hold for missing data or for replicas that are starting;
            # printed once until the pool has data again.
            if role not in self._holding:
                self._holding.add(role)
                self.emit(decision.reason)
        else:
            self._holding.discard(role)
        self.histories[role] = record_decision(
            self.histories[role], decision, now, self.pools.settings
        )
        return decision
