"""The discrete-event model of both pools serving a trace.

Model, per request:

1. It arrives at its trace time. With a ready prefill replica and a prompt
   of at least `min_remote_prefill_tokens`, it queues FIFO at the least
   loaded ready prefill replica (remote prefill), and the least loaded
   decode replica is chosen at the same time, as the router does.
   Otherwise it queues for local prefill on the least loaded decode replica.
2. A prefill replica runs one prefill at a time (`prompt / prefill tokens/s`).
   The KV transfer (`prompt * KV bytes per token / bytes/s`) follows, and the
   first token reaches the client when the transfer ends. Transfers run in
   parallel without contention.
3. The decode replica admits the request into its continuous batch at the
   next step boundary when it has fewer than `max_batch_size` running, else
   the request waits there (that is the decode queue depth). Each step takes
   `step_seconds(batch size)` and gives every running request one token.
   A local prefill on a decode replica runs between two steps and stalls the
   batch for its duration.
4. New replicas serve only after `startup_seconds`; removed replicas take no
   new requests and stop once their queue and running requests are done.

Time-to-first-token is first token minus arrival. Inter-token latency is the
mean gap over a request's remaining tokens, (finish - first token) / (output
tokens - 1), so waiting for a batch slot counts.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from disagg_operator.policy import DECODE, PREFILL, Observation
from disagg_operator.simulate.calibration import Calibration

STARTING = "starting"
READY = "ready"
DRAINING = "draining"
STOPPED = "stopped"


@dataclass
class SimRequest:
    index: int
    arrival: float
    prompt_tokens: int
    output_tokens: int
    remote_prefill: bool = True
    first_token: float | None = None
    finish: float | None = None
    # Decode step count at which the last token is produced.
    last_step: int = 0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def itl(self) -> float:
        """Return the mean inter-token latency, 0 for single-token outputs."""
        if self.output_tokens <= 1:
            return 0.0
        return (self.finish - self.first_token) / (self.output_tokens - 1)


@dataclass
class Replica:
    role: str
    name: str
    created: float
    ready_at: float
    state: str = STARTING
    stopped_at: float | None = None

    @property
    def active(self) -> bool:
        return self.state in (STARTING, READY)


@dataclass
class PrefillReplica(Replica):
    queue: deque = field(default_factory=deque)
    busy: SimRequest | None = None

    @property
    def load(self) -> int:
        return len(self.queue) + (self.busy is not None)

    @property
    def idle(self) -> bool:
        return self.load == 0

    def observe(self, now: float) -> Observation:
        return Observation(self.name, len(self.queue), int(self.busy is not None), now)


@dataclass
class DecodeReplica(Replica):
    # Requests with their first token, waiting for a batch slot.
    waiting: deque = field(default_factory=deque)
    local_prefills: deque = field(default_factory=deque)
    # Heap of (last_step, index, request).
    running: list = field(default_factory=list)
    # Requests assigned here whose prefill or KV transfer is not done yet.
    incoming: int = 0
    stepping: bool = False
    local_prefill_running: bool = False
    steps: int = 0

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.local_prefills) + len(self.running) + self.incoming

    @property
    def idle(self) -> bool:
        return self.load == 0 and not self.stepping

    def observe(self, now: float) -> Observation:
        queue_depth = len(self.waiting) + len(self.local_prefills)
        in_flight = len(self.running) + int(self.local_prefill_running)
        return Observation(self.name, queue_depth, in_flight, now)


@dataclass
class PoolView:
    """The state of one pool that a scaler reads at a tick."""

    role: str
    current_replicas: int
    ready_replicas: int
    observations: tuple[Observation, ...]
    local_prefill_fallbacks: int


class Cluster:
    """Both pools, their replicas and the event queue of one simulation run."""

    def __init__(
        self,
        calibration: Calibration,
        initial: dict[str, int],
        min_remote_prefill_tokens: int = 64,
    ) -> None:
        self.calibration = calibration
        self.min_remote_prefill_tokens = min_remote_prefill_tokens
        self.now = 0.0
        self.events: list = []
        self.sequence = itertools.count()
        self.replicas: dict[str, list[Replica]] = {PREFILL: [], DECODE: []}
        self.names = {PREFILL: itertools.count(), DECODE: itertools.count()}
        self.local_prefill_fallbacks = 0
        self.completed = 0
        for role, count in initial.items():
            for _ in range(count):
                self._add_replica(role, startup_seconds=0.0)

    # -- events ------------------------------------------------------------

    def schedule(self, time: float, handler, *args) -> None:
        heapq.heappush(self.events, (time, next(self.sequence), handler, args))

    def run_until(self, time: float) -> None:
        """Process every event up to and including `time`."""
        while self.events and self.events[0][0] <= time:
            event_time, _, handler, args = heapq.heappop(self.events)
            self.now = event_time
            handler(*args)
        self.now = max(self.now, time)

    # -- arrivals and routing ---------------------------------------------

    def arrive(self, request: SimRequest) -> None:
        decode = self._least_loaded(DECODE)
        prefill = self._least_loaded(PREFILL)
        long_enough = request.prompt_tokens >= self.min_remote_prefill_tokens
        if prefill is None or not long_enough:
            if long_enough:
                self.local_prefill_fallbacks += 1
            request.remote_prefill = False
            decode.local_prefills.append(request)
            self._kick_decode(decode)
            return
        decode.incoming += 1
        prefill.queue.append((request, decode))
        self._kick_prefill(prefill)

    def _least_loaded(self, role: str):
        ready = [r for r in self.replicas[role] if r.state == READY]
        if not ready and role == DECODE:
            # Decode keeps at least one replica, so until one is ready, queue on a starting one.
            ready = [r for r in self.replicas[role] if r.active]
        if not ready:
            return None
        return min(ready, key=lambda replica: replica.load)

    # -- prefill -----------------------------------------------------------

    def _kick_prefill(self, replica: PrefillReplica) -> None:
        if replica.state not in (READY, DRAINING) or replica.busy or not replica.queue:
            return
        request, decode = replica.queue.popleft()
        replica.busy = request
        seconds = self.calibration.prefill_seconds(request.prompt_tokens)
        self.schedule(self.now + seconds, self._prefill_done, replica, request, decode)

    def _prefill_done(self, replica: PrefillReplica, request: SimRequest, decode) -> None:
        replica.busy = None
        transfer = self.calibration.kv_transfer_seconds(request.prompt_tokens)
        self.schedule(self.now + transfer, self._kv_transfer_done, request, decode)
        self._kick_prefill(replica)
        self._stop_if_drained(replica)

    def _kv_transfer_done(self, request: SimRequest, decode: DecodeReplica) -> None:
        decode.incoming -= 1
        request.first_token = self.now
        self._join_decode(decode, request)

    # -- decode ------------------------------------------------------------

    def _join_decode(self, replica: DecodeReplica, request: SimRequest) -> None:
        if request.output_tokens <= 1:
            self._finish(request)
            self._stop_if_drained(replica)
            return
        replica.waiting.append(request)
        self._kick_decode(replica)

    def _kick_decode(self, replica: DecodeReplica) -> None:
        """Start the next local prefill or decode step on an idle ready replica."""
        if replica.stepping or replica.state not in (READY, DRAINING):
            return
        if replica.local_prefills:
            request = replica.local_prefills.popleft()
            replica.stepping = True
            replica.local_prefill_running = True
            seconds = self.calibration.prefill_seconds(request.prompt_tokens)
            self.schedule(self.now + seconds, self._local_prefill_done, replica, request)
            return
        while replica.waiting and len(replica.running) < self.calibration.max_batch_size:
            request = replica.waiting.popleft()
            request.last_step = replica.steps + request.output_tokens - 1
            heapq.heappush(replica.running, (request.last_step, request.index, request))
        if not replica.running:
            self._stop_if_drained(replica)
            return
        replica.stepping = True
        seconds = self.calibration.step_seconds(len(replica.running))
        self.schedule(self.now + seconds, self._step_done, replica)

    def _local_prefill_done(self, replica: DecodeReplica, request: SimRequest) -> None:
        replica.stepping = False
        replica.local_prefill_running = False
        request.first_token = self.now
        self._join_decode(replica, request)
        self._kick_decode(replica)

    def _step_done(self, replica: DecodeReplica) -> None:
        replica.stepping = False
        replica.steps += 1
        while replica.running and replica.running[0][0] <= replica.steps:
            _, _, request = heapq.heappop(replica.running)
            self._finish(request)
        self._kick_decode(replica)

    def _finish(self, request: SimRequest) -> None:
        request.finish = self.now
        self.completed += 1

    # -- replicas ----------------------------------------------------------

    def _add_replica(self, role: str, startup_seconds: float) -> None:
        kind = PrefillReplica if role == PREFILL else DecodeReplica
        name = f"{role}-{next(self.names[role])}"
        replica = kind(role, name, self.now, self.now + startup_seconds)
        self.replicas[role].append(replica)
        if startup_seconds == 0:
            replica.state = READY
        else:
            self.schedule(replica.ready_at, self._replica_ready, replica)

    def _replica_ready(self, replica: Replica) -> None:
        if replica.state != STARTING:
            return
        replica.state = READY
        if replica.role == PREFILL:
            self._kick_prefill(replica)
        else:
            self._kick_decode(replica)

    def _stop_if_drained(self, replica: Replica) -> None:
        if replica.state == DRAINING and replica.idle:
            replica.state = STOPPED
            replica.stopped_at = self.now

    def set_replicas(self, role: str, desired: int) -> None:
        """Add or remove replicas so `desired` are starting or ready.

        Starting replicas are removed first (newest first), then the least
        loaded ready ones, which drain before they stop.
        """
        active = [r for r in self.replicas[role] if r.active]
        for _ in range(desired - len(active)):
            self._add_replica(role, self.calibration.startup_seconds)
        surplus = len(active) - desired
        if surplus <= 0:
            return
        starting = [r for r in reversed(active) if r.state == STARTING]
        ready = sorted((r for r in active if r.state == READY), key=lambda r: r.load)
        for replica in (starting + ready)[:surplus]:
            if replica.state == STARTING:
                replica.state = STOPPED
                replica.stopped_at = self.now
                continue
            replica.state = DRAINING
            self._stop_if_drained(replica)

    # -- observation -------------------------------------------------------

    def view(self, role: str) -> PoolView:
        """Sample one pool as the autoscaler scrapes it: one observation per ready replica."""
        replicas = self.replicas[role]
        ready = [r for r in replicas if r.state == READY]
        fallbacks = 0
        if role == PREFILL:
            fallbacks, self.local_prefill_fallbacks = self.local_prefill_fallbacks, 0
        return PoolView(
            role=role,
            current_replicas=sum(1 for r in replicas if r.active),
            ready_replicas=len(ready),
            observations=tuple(r.observe(self.now) for r in ready),
            local_prefill_fallbacks=fallbacks,
        )

    def replica_seconds(self, role: str, end: float) -> float:
        total = 0.0
        for replica in self.replicas[role]:
            stop = replica.stopped_at if replica.stopped_at is not None else end
            total += max(0.0, stop - replica.created)
        return total
