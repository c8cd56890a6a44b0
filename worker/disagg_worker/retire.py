"""Retiring one local replica without losing a request, for `disagg serve`.

`LocalPool.scale_to` removes a replica from the endpoints file and then
calls `retire_replica` in a background thread, which:

1. waits until the router lists no more replicas of that role than the
   file does. The router rereads the file every second and stops choosing
   a replica it dropped, but calls already running on it continue;
2. reads the replica's queue depth, in flight and pending KV transfers from
   its /metrics, for the log;
3. sends SIGTERM: the worker stops admitting, finishes its in-flight
   requests and, on a prefill replica, waits until the decode replicas
   acknowledged its outstanding KV transfers, then exits
   (`disagg_worker.server.app.WorkerServer.drain`);
4. waits for the exit for the drain timeout plus a margin, and kills the
   process only if it is still running then.

Each step is logged with the replica name, `role[index]`.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

# Seconds to wait for the router to drop a replica: several rereads of the
# endpoints file, which serve has the router do every second.
ROUTER_DROP_TIMEOUT_S = 10.0
# Seconds between two reads of the router's metrics while waiting.
ROUTER_POLL_INTERVAL_S = 0.2
# Seconds past the worker's own drain timeout before the process is killed:
# the worker stops its gRPC server and exits after the drain.
EXIT_MARGIN_S = 10.0
# The router's gauge of replicas known from discovery, labelled `role`.
ROUTER_REPLICAS_METRIC = "disagg_router_replicas"
# Worker gauges, labelled `role`, shown in the log before SIGTERM.
REPLICA_LOAD_METRICS = {
    "queue_depth": "disagg_queue_depth",
    "inflight": "disagg_inflight_requests",
    "pending_kv_transfers": "disagg_pending_kv_transfers",
}


def _scrape(url: str, timeout_s: float = 1.0) -> dict[str, list[tuple[dict, float]]] | None:
    """Return the metric samples by family name at `url`, or None when reading it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError):
        return None
    return {family.name: [(s.labels, s.value) for s in family.samples] for family in families}


class RouterView:
    """How many replicas of one role the router lists, read from its /metrics.

    `listed_in_file` returns how many replicas of that role the endpoints
    file lists now; the router has caught up once it lists no more.
    """

    def __init__(self, metrics_url: str, role: str, listed_in_file: Callable[[], int]) -> None:
        self.metrics_url = metrics_url
        self.role = role
        self.listed_in_file = listed_in_file

    def listed_by_router(self) -> int | None:
        """Return the router's count of known replicas of the role, None if unreadable."""
        families = _scrape(self.metrics_url)
        if families is None:
            return None
        for labels, value in families.get(ROUTER_REPLICAS_METRIC, ()):
            if labels.get("role") == self.role:
                return round(value)
        return None

    def wait_dropped(self, name: str, expected: int, timeout_s: float) -> bool:
        """Wait until the router lists at most `expected` replicas; False at the deadline."""
        started = time.monotonic()
        deadline = started + timeout_s
        listed = None
        while time.monotonic() < deadline:
            listed = self.listed_by_router()
            if listed is not None and listed <= expected:
                logger.info(
                    "router dropped replica=%s after %.1f s: it lists %d %s replicas",
                    name,
                    time.monotonic() - started,
                    listed,
                    self.role,
                )
                return True
            time.sleep(ROUTER_POLL_INTERVAL_S)
        logger.warning(
            "router still lists %s %s replicas after %.0f s, expected %d; draining replica=%s "
            "anyway: it rejects new requests with UNAVAILABLE and the router retries elsewhere",
            "an unknown number of" if listed is None else listed,
            self.role,
            timeout_s,
            expected,
            name,
        )
        return False


def replica_load(metrics_url: str) -> dict[str, int] | None:
    """Return the replica's queue depth, in flight and pending KV transfers, None if unreadable."""
    families = _scrape(metrics_url)
    if families is None:
        return None
    load = {}
    for key, metric in REPLICA_LOAD_METRICS.items():
        load[key] = round(sum(value for _, value in families.get(metric, ())))
    return load


def retire_replica(
    name: str,
    process,
    address: str,
    metrics_url: str,
    router: RouterView | None,
    drain_timeout_s: float,
) -> bool:
    """Take one replica out of routing, drain it and stop it; return True if it drained.

    `process` is the replica's `ManagedProcess`; the endpoints file must
    already omit `address`.
    """
    logger.info("replica left the endpoints file replica=%s address=%s", name, address)

    # 1. The router must stop choosing the replica before it stops admitting.
    if router is not None:
        router.wait_dropped(name, router.listed_in_file(), ROUTER_DROP_TIMEOUT_S)

    # 2. What the drain has to finish, for the log.
    load = replica_load(metrics_url)
    if load is None:
        logger.warning("replica=%s metrics unreadable before drain url=%s", name, metrics_url)
    else:
        logger.info(
            "draining replica=%s queue_depth=%d inflight=%d pending_kv_transfers=%d",
            name,
            load["queue_depth"],
            load["inflight"],
            load["pending_kv_transfers"],
        )

    # 3. SIGTERM: the worker finishes in-flight requests and KV transfers, then exits.
    started = time.monotonic()
    process.terminate()

    # 4. Kill only a worker that outlives its own drain timeout.
    drained = process.wait(started + drain_timeout_s + EXIT_MARGIN_S)
    if not drained:
        process.kill()
        logger.warning(
            "replica=%s killed: still running %.0f s after SIGTERM",
            name,
            drain_timeout_s + EXIT_MARGIN_S,
        )
        return False
    code = process.process.returncode if process.process is not None else None
    logger.info(
        "replica stopped replica=%s exit_code=%s drain_s=%.1f",
        name,
        code,
        time.monotonic() - started,
    )
    return True
