"""Async gRPC client side of the workers, used by the router.

A `ReplicaPool` contains one `Replica` per worker address of a role. A
background task polls every replica's grpc.health.v1 status and
Worker.GetLoad (every 0.5 s by default); a replica is ready while the
health check returns SERVING, GetLoad succeeds and it is not draining. Replicas
that fail leave the rotation and come back on the first good poll.

`ReplicaPool.choose()` returns the least-loaded ready replica. The load is
the larger of what the replica last reported (queue depth + in flight) and
the requests this router has running on it, because a report is up to one
poll interval old and a burst of requests would otherwise all land on the
replica that looked idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from disagg_worker.proto import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

# Seconds between two polls of every replica's health and load.
DEFAULT_POLL_INTERVAL_S = 0.5
# Seconds one health check or GetLoad call may take before the replica
# counts as failed for that poll.
DEFAULT_POLL_TIMEOUT_S = 2.0
# The router's messages carry token ids only, so they stay small; this limit
# only bounds what a misbehaving peer can make the router buffer.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Upper bound of the reconnect back-off to a replica that went away, in ms.
MAX_RECONNECT_BACKOFF_MS = 2000
# Seconds the calls running on a removed replica may take before they are
# cancelled. A removed replica's own drain usually ends them much sooner.
REMOVED_REPLICA_GRACE_S = 600.0


class Replica:
    """One worker replica from the router's side: channel, stubs, health and load."""

    def __init__(self, address: str, role: str) -> None:
        self.address = address
        self.role = role
        self.channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # gRPC's default reconnect back-off grows to 120 s; a restarted
                # replica should rejoin within a few polls.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
            ],
        )
        self.prefill = worker_pb2_grpc.PrefillStub(self.channel)
        self.decode = worker_pb2_grpc.DecodeStub(self.channel)
        self.worker = worker_pb2_grpc.WorkerStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        # Last GetLoad reply; None until the first successful poll.
        self.load: worker_pb2.GetLoadResponse | None = None
        self.ready = False
        # Requests this router has running on the replica right now.
        self.router_inflight = 0
        self.closed = False
        # False until the first health poll has finished.
        self.polled = False

    @property
    def reported_load(self) -> int:
        if self.load is None:
            return 0
        return self.load.queue_depth + self.load.inflight

    @property
    def effective_load(self) -> int:
        return max(self.reported_load, self.router_inflight)

    @property
    def full(self) -> bool:
        """True when the last report showed a full admission queue."""
        return (
            self.load is not None
            and self.load.max_queue > 0
            and self.load.queue_depth >= self.load.max_queue
        )

    def mark_failed(self, reason: str) -> None:
        """Take the replica out of rotation until the next good poll."""
        if self.ready:
            logger.warning(
                "replica left rotation role=%s address=%s reason=%s",
                self.role,
                self.address,
                reason,
            )
        self.ready = False

    async def poll(self, timeout_s: float) -> None:
        """Refresh health and load; update `ready` and log transitions."""
        was_ready = self.ready
        reason = ""
        try:
            health = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
            load = await self.worker.GetLoad(worker_pb2.GetLoadRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            self.ready = False
            reason = f"{error.code().name}: {error.details()}"
        else:
            self.load = load
            if health.status != health_pb2.HealthCheckResponse.SERVING:
                status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
                reason = f"health status {status_name}"
            elif load.draining:
                reason = "draining"
            self.ready = not reason
        first_poll = not self.polled
        self.polled = True
        if first_poll and not self.ready:
            logger.warning(
                "replica not ready at its first health check role=%s address=%s reason=%s; "
                "it joins the rotation when a health check passes",
                self.role,
                self.address,
                reason,
            )
        elif was_ready and not self.ready:
            logger.warning(
                "replica left rotation role=%s address=%s reason=%s",
                self.role,
                self.address,
                reason,
            )
        elif self.ready and not was_ready:
            logger.info("replica ready role=%s address=%s", self.role, self.address)

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; running calls get `grace` seconds to finish (None: cancelled)."""
        self.closed = True
        self.ready = False
        await self.channel.close(grace=grace)


class ReplicaPool:
    """All replicas of one role, with background health and load polling."""

    def __init__(
        self,
        role: str,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        poll_timeout_s: float = DEFAULT_POLL_TIMEOUT_S,
    ) -> None:
        self.role = role
        self.poll_interval_s = poll_interval_s
        self.poll_timeout_s = poll_timeout_s
        self.replicas: dict[str, Replica] = {}
        self._task: asyncio.Task | None = None
        # Breaks ties between equally loaded replicas in turn.
        self._turn = itertools.count()
        # Channels of removed replicas, closing once their calls finish.
        self._closing: set[asyncio.Task] = set()

    @property
    def addresses(self) -> list[str]:
        return sorted(self.replicas)

    def ready_replicas(self) -> list[Replica]:
        return [replica for replica in self.replicas.values() if replica.ready]

    @property
    def queue_depth(self) -> int:
        """Sum of the queue depths the ready replicas last reported."""
        return sum(
            replica.load.queue_depth
            for replica in self.ready_replicas()
            if replica.load is not None
        )

    @property
    def inflight(self) -> int:
        """Requests this router has running on the pool."""
        return sum(replica.router_inflight for replica in self.replicas.values())

    async def set_endpoints(self, addresses: Iterable[str]) -> None:
        """Add new addresses (polled at once) and close the ones no longer listed."""
        listed = set(addresses)
        added = [address for address in listed if address not in self.replicas]
        removed = [address for address in self.replicas if address not in listed]
        for address in added:
            self.replicas[address] = Replica(address, self.role)
            logger.info("replica added role=%s address=%s", self.role, address)
        for address in removed:
            replica = self.replicas.pop(address)
            logger.info("replica removed role=%s address=%s", self.role, address)
            # The replica leaves the rotation now, but calls already running on
            # it finish: `disagg serve` removes a replica before it drains it.
            replica.ready = False
            task = asyncio.create_task(replica.close(grace=REMOVED_REPLICA_GRACE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if added:
            await asyncio.gather(
                *(self.replicas[address].poll(self.poll_timeout_s) for address in added)
            )

    async def poll_once(self) -> None:
        await asyncio.gather(
            *(replica.poll(self.poll_timeout_s) for replica in list(self.replicas.values()))
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll_forever(), name=f"poll-{self.role}")

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                # A poll bug must not stop polling for good: log it and go on.
                logger.exception("replica poll failed role=%s", self.role)
            await asyncio.sleep(self.poll_interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for replica in list(self.replicas.values()):
            await replica.close()
        self.replicas.clear()

    def choose(self, exclude: Iterable[str] = ()) -> Replica | None:
        """Return the least-loaded ready replica not in `exclude`, or None.

        Replicas whose last report showed a full queue come last, so a
        request goes to one of them only when every replica is full.
        """
        excluded = set(exclude)
        candidates = [
            replica for replica in self.ready_replicas() if replica.address not in excluded
        ]
        if not candidates:
            return None
        turn = next(self._turn)
        candidates.sort(key=lambda replica: replica.address)
        # Rotate before the stable sort so ties go round-robin.
        shift = turn % len(candidates)
        candidates = candidates[shift:] + candidates[:shift]
        candidates.sort(key=lambda replica: (replica.full, replica.effective_load))
        return candidates[0]
