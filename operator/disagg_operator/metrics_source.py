"""Where the autoscaler reads queue depth and in flight: the metrics source interface.

The autoscaling loop (`disagg_operator.autoscale`) calls a `MetricsSource`
once per tick with the ready pods of both worker pools, and gets one
`Observation` per pod, or None for a pod without usable data. The policy
counts a None as missing data: it then never scales that pool down.

`PodScrapeSource` is the source the operator uses: it reads each pod's
Prometheus text on `http://POD_IP:PORT/metrics` directly, concurrently and
with a timeout. It needs no Prometheus server, only network access from the
operator pod to the worker pods.

A source that queries a Prometheus server instead (a PromQL query such as
`sum by (pod) (disagg_queue_depth{role="prefill"})`) implements the same
two methods and returns the same mappings keyed by pod name; `tick` accepts
any object that has them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .policy import Observation

logger = logging.getLogger(__name__)

# Metric names on each worker's /metrics, labelled with `role`. They are a
# contract with the worker (disagg_worker.metrics), which a test checks.
QUEUE_DEPTH_METRIC = "disagg_queue_depth"
INFLIGHT_METRIC = "disagg_inflight_requests"
# The router's counter of requests prefilled on a decode replica, by `reason`.
# The parser names counter families without the `_total` suffix.
LOCAL_PREFILL_METRIC = "disagg_local_prefill"
NO_PREFILL_REPLICA_REASON = "no_prefill_replica"

METRICS_PATH = "/metrics"
# Seconds one scrape (connect and read) may take before the pod counts as missing.
DEFAULT_SCRAPE_TIMEOUT_SECONDS = 2.0
# Largest /metrics body read from one pod; a worker's is a few KiB.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PodTarget:
    """One ready pod to observe: where its metrics are served and which pool it is in."""

    name: str
    ip: str
    port: int
    role: str

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}{METRICS_PATH}"


class MetricsSource(Protocol):
    """Queue depth and in flight per pod, and the router's local-prefill fallbacks.

    The autoscaling loop calls both methods once per tick of one resource,
    from the operator's event loop. Neither may raise for a single pod that
    fails: it reports that pod as None and logs why.
    """

    async def observe(self, pods: Sequence[PodTarget], now: float) -> dict[str, Observation | None]:
        """Return an Observation stamped `now`, or None, for each pod name in `pods`."""
        ...

    async def local_prefill_totals(self, routers: Sequence[PodTarget]) -> dict[str, float | None]:
        """Return each router pod's total of requests prefilled locally for want of a
        prefill replica, or None where it could not be read."""
        ...


class MetricsParseError(ValueError):
    """A /metrics body that is not Prometheus text, or lacks a required metric."""


def _families(text: str) -> dict[str, list[tuple[Mapping[str, str], float]]]:
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as error:
        raise MetricsParseError(f"invalid Prometheus text: {error}") from error
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in families
    }


def _count(
    families: Mapping[str, list[tuple[Mapping[str, str], float]]],
    metric: str,
    labels: Mapping[str, str],
) -> int:
    """Return the sum of `metric`'s samples that carry `labels`, as a whole count."""
    if metric not in families:
        raise MetricsParseError(f"metric {metric} is missing")
    values = [
        value
        for sample_labels, value in families[metric]
        if all(sample_labels.get(key) == wanted for key, wanted in labels.items())
    ]
    if not values:
        selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
        raise MetricsParseError(f"metric {metric} has no sample with {{{selector}}}")
    total = sum(values)
    if not math.isfinite(total) or total < 0:
        raise MetricsParseError(f"metric {metric} is {total}: expected a count of 0 or more")
    return round(total)


def parse_observation(text: str, pod: PodTarget, now: float) -> Observation:
    """Read queue depth and in flight of `pod`'s role from Prometheus text.

    Raises MetricsParseError naming the problem when the text cannot be
    parsed or a metric for the role is absent.
    """
    families = _families(text)
    role = {"role": pod.role}
    return Observation(
        replica=pod.name,
        queue_depth=_count(families, QUEUE_DEPTH_METRIC, role),
        in_flight=_count(families, INFLIGHT_METRIC, role),
        time=now,
    )


def parse_local_prefill_total(text: str) -> float:
    """Read the router's count of local prefills for want of a prefill replica.

    A router that never fell back has no sample with that reason yet, which
    reads as 0; a text without the metric family at all raises.
    """
    families = _families(text)
    if LOCAL_PREFILL_METRIC not in families:
        raise MetricsParseError(f"metric {LOCAL_PREFILL_METRIC}_total is missing")
    total = sum(
        value
        for labels, value in families[LOCAL_PREFILL_METRIC]
        if labels.get("reason") == NO_PREFILL_REPLICA_REASON
    )
    if not math.isfinite(total) or total < 0:
        raise MetricsParseError(f"metric {LOCAL_PREFILL_METRIC}_total is {total}")
    return total


class PodScrapeSource:
    """Scrape each pod's /metrics over HTTP, all pods at once, each within a timeout."""

    def __init__(self, timeout_seconds: float = DEFAULT_SCRAPE_TIMEOUT_SECONDS) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"invalid scrape timeout {timeout_seconds}: must be above 0 seconds")
        self.timeout_seconds = timeout_seconds

    async def observe(self, pods: Sequence[PodTarget], now: float) -> dict[str, Observation | None]:
        texts = await self._scrape_all(pods)
        observations: dict[str, Observation | None] = {}
        for pod in pods:
            text = texts[pod.name]
            if text is None:
                observations[pod.name] = None
                continue
            try:
                observations[pod.name] = parse_observation(text, pod, now)
            except MetricsParseError as error:
                logger.warning(
                    "unusable metrics pod=%s role=%s url=%s: %s; counted as missing data",
                    pod.name,
                    pod.role,
                    pod.url,
                    error,
                )
                observations[pod.name] = None
        return observations

    async def local_prefill_totals(self, routers: Sequence[PodTarget]) -> dict[str, float | None]:
        texts = await self._scrape_all(routers)
        totals: dict[str, float | None] = {}
        for pod in routers:
            text = texts[pod.name]
            if text is None:
                totals[pod.name] = None
                continue
            try:
                totals[pod.name] = parse_local_prefill_total(text)
            except MetricsParseError as error:
                logger.warning(
                    "unusable router metrics pod=%s url=%s: %s", pod.name, pod.url, error
                )
                totals[pod.name] = None
        return totals

    async def _scrape_all(self, pods: Sequence[PodTarget]) -> dict[str, str | None]:
        if not pods:
            return {}
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            texts = await asyncio.gather(*(self._scrape(session, pod) for pod in pods))
        return {pod.name: text for pod, text in zip(pods, texts, strict=True)}

    async def _scrape(self, session: aiohttp.ClientSession, pod: PodTarget) -> str | None:
        """Return the /metrics body of `pod`, or None (logged) when it does not respond."""
        try:
            async with session.get(pod.url) as response:
                if response.status != 200:
                    logger.warning(
                        "metrics scrape failed pod=%s url=%s: HTTP %d; counted as missing data",
                        pod.name,
                        pod.url,
                        response.status,
                    )
                    return None
                body = await response.content.read(MAX_BODY_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            logger.warning(
                "metrics scrape failed pod=%s url=%s: %s; counted as missing data",
                pod.name,
                pod.url,
                str(error) or type(error).__name__,
            )
            return None
        if len(body) > MAX_BODY_BYTES:
            logger.warning(
                "metrics scrape failed pod=%s url=%s: body over %d bytes; counted as missing data",
                pod.name,
                pod.url,
                MAX_BODY_BYTES,
            )
            return None
        return body.decode("utf-8", "replace")
