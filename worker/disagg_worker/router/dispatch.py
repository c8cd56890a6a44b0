"""Running one generation over the pools: remote or local prefill, fallbacks.

`Dispatcher.generate(job)` is an async generator of `TokenEvent`s. The HTTP
layer awaits the first event before it sends response headers, so every
failure that happens before the first token (a full pool, no replica) still
becomes a proper HTTP status. Closing the generator early (client gone,
stop sequence found) cancels the running gRPC call, which frees the
request's batch slot on the decode replica.

Fault handling, in order:
1. A prompt shorter than `min_remote_prefill_tokens`, or no ready prefill
   replica: local prefill (Decode.Generate with the prompt).
2. A prefill replica that fails or times out: one retry on another prefill
   replica, then local prefill.
3. A KV transfer that fails (the decode replica rejected it, or the KV is
   gone when Generate requests it): local prefill.
4. Local prefill tries every ready decode replica, least loaded first;
   RESOURCE_EXHAUSTED from all of them raises `Overloaded` (HTTP 429).
Every fallback increments disagg_local_prefill_total{reason} and is logged
with the request id.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from disagg_worker.client import ReplicaPool
from disagg_worker.proto import worker_pb2
from disagg_worker.router import metrics as router_metrics
from disagg_worker.router.metrics import RouterMetrics

logger = logging.getLogger(__name__)

# Status codes of a Prefill call that mean the KV transfer to the decode
# replica failed, not the prefill replica itself (the prefill replica passes
# on the decode replica's status). Retrying on another prefill replica would
# send the KV to the same decode replica, so these go to local prefill.
KV_TRANSFER_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.ABORTED,
    }
)
# The prefill replica prefixes the details of a failed KV transfer with
# this text, whatever the status code (UNAVAILABLE for an unreachable decode
# replica, RESOURCE_EXHAUSTED for a full KV store, DEADLINE_EXCEEDED).
KV_TRANSFER_DETAILS_PREFIX = "KV transfer"
# Status codes after which a replica leaves the rotation until its next
# good health poll.
REPLICA_DOWN_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Overloaded(Exception):
    """Every replica that could take the request rejected it as full."""


class NoReplica(Exception):
    """No ready replica can serve the request."""


class GenerationFailed(Exception):
    """The decode replica failed after the request was admitted."""


@dataclass
class Job:
    """One generation as the dispatcher runs it."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: worker_pb2.SamplingParams
    ignore_eos: bool = False


@dataclass
class TokenEvent:
    """Tokens received in one message, and the finish reason on the last one."""

    token_ids: list[int]
    finish_reason: str = ""
    # "remote" or "local": where the prompt was prefilled.
    prefill: str = "local"


@dataclass
class DispatchConfig:
    min_remote_prefill_tokens: int = 64
    # Seconds for the prefill replica's queue wait and forward pass.
    prefill_timeout_s: float = 30.0
    # Seconds added to the Prefill deadline for the KV transfer.
    kv_timeout_s: float = 30.0
    eos_token_ids: frozenset[int] = field(default_factory=frozenset)


class Dispatcher:
    def __init__(
        self,
        config: DispatchConfig,
        prefill_pool: ReplicaPool,
        decode_pool: ReplicaPool,
        metrics: RouterMetrics,
    ) -> None:
        self.config = config
        self.prefill_pool = prefill_pool
        self.decode_pool = decode_pool
        self.metrics = metrics

    def _local(self, job: Job, reason: str) -> AsyncIterator[TokenEvent]:
        self.metrics.local_prefill.labels(reason=reason).inc()
        return self._generate_local(job, job.prompt_ids, job.max_tokens)

    async def generate(self, job: Job) -> AsyncIterator[TokenEvent]:
        """Yield the request's tokens, choosing remote or local prefill."""
        if len(job.prompt_ids) < self.config.min_remote_prefill_tokens:
            async for event in self._local(job, router_metrics.REASON_SHORT_PROMPT):
                yield event
            return
        if not self.prefill_pool.ready_replicas():
            logger.info(
                "local prefill request_id=%s reason=%s",
                job.request_id,
                router_metrics.REASON_NO_PREFILL_REPLICA,
            )
            async for event in self._local(job, router_metrics.REASON_NO_PREFILL_REPLICA):
                yield event
            return
        async for event in self._generate_remote(job):
            yield event

    async def _prefill(self, job: Job, decode_address: str) -> tuple[str, int] | str:
        """Run Prefill with one retry; return (attempt id, first token) or a fallback reason."""
        tried: list[str] = []
        deadline_s = self.config.prefill_timeout_s + self.config.kv_timeout_s
        next_replica = self.prefill_pool.choose()
        for attempt in range(2):
            replica = next_replica
            if replica is None:
                break
            tried.append(replica.address)
            # A fresh id per attempt: a timed-out attempt may still deliver
            # its KV later, and the decode replica rejects duplicate ids.
            attempt_id = job.request_id if attempt == 0 else f"{job.request_id}-retry{attempt}"
            request = worker_pb2.PrefillRequest(
                request_id=attempt_id,
                prompt_token_ids=job.prompt_ids,
                decode_address=decode_address,
                sampling=job.sampling,
            )
            replica.router_inflight += 1
            try:
                reply = await replica.prefill.Prefill(request, timeout=deadline_s)
            except grpc.aio.AioRpcError as error:
                code = error.code()
                details = error.details() or ""
                if code in KV_TRANSFER_CODES or details.startswith(KV_TRANSFER_DETAILS_PREFIX):
                    logger.warning(
                        "KV transfer failed request_id=%s prefill=%s decode=%s code=%s: %s; "
                        "falling back to local prefill",
                        job.request_id,
                        replica.address,
                        decode_address,
                        code.name,
                        error.details(),
                    )
                    return router_metrics.REASON_KV_TRANSFER_FAILED
                if code in REPLICA_DOWN_CODES:
                    replica.mark_failed(f"Prefill {code.name}")
                # The one retry goes to another ready replica, when there is one.
                next_replica = self.prefill_pool.choose(exclude=tried) if attempt == 0 else None
                if next_replica is not None:
                    next_step = "retrying on another prefill replica"
                elif attempt == 0:
                    next_step = "no other prefill replica; falling back to local prefill"
                else:
                    next_step = "falling back to local prefill"
                logger.warning(
                    "prefill failed request_id=%s prefill=%s code=%s: %s; %s",
                    job.request_id,
                    replica.address,
                    code.name,
                    error.details(),
                    next_step,
                )
                if next_replica is not None:
                    self.metrics.prefill_retries.inc()
                continue
            finally:
                replica.router_inflight -= 1
            logger.info(
                "remote prefill done request_id=%s prefill=%s decode=%s queue_s=%.3f "
                "prefill_s=%.3f transfer_s=%.3f kv_bytes=%d",
                job.request_id,
                replica.address,
                decode_address,
                reply.queue_seconds,
                reply.prefill_seconds,
                reply.transfer_seconds,
                reply.kv_bytes,
            )
            return attempt_id, reply.first_token_id
        return router_metrics.REASON_PREFILL_FAILED

    async def _generate_remote(self, job: Job) -> AsyncIterator[TokenEvent]:
        # 1. Pick the decode replica that will receive the KV cache.
        decode = self.decode_pool.choose()
        if decode is None:
            raise NoReplica("no ready decode replica")

        # 2. Prefill there (with one retry), or fall back to local prefill.
        outcome = await self._prefill(job, decode.address)
        if isinstance(outcome, str):
            async for event in self._local(job, outcome):
                yield event
            return
        attempt_id, first_token = outcome
        finish_reason = ""
        if not job.ignore_eos and first_token in self.config.eos_token_ids:
            finish_reason = "stop"
        elif job.max_tokens == 1:
            finish_reason = "length"
        yield TokenEvent([first_token], "", prefill="remote")

        # 3. Continue on the decode replica from the transferred KV. The call
        # runs even when the first token ended the request, because it frees
        # the KV entry the decode replica holds for it.
        request = worker_pb2.GenerateRequest(
            request_id=attempt_id,
            remote_kv=True,
            sampling=job.sampling,
            max_tokens=job.max_tokens,
            ignore_eos=job.ignore_eos,
        )
        decode.router_inflight += 1
        call = decode.decode.Generate(request)
        try:
            try:
                first_reply = await call.read()
            except grpc.aio.AioRpcError as error:
                if finish_reason:
                    yield TokenEvent([], finish_reason, "remote")
                    return
                code = error.code()
                if code in REPLICA_DOWN_CODES:
                    decode.mark_failed(f"Generate {code.name}")
                logger.warning(
                    "remote KV unusable request_id=%s decode=%s code=%s: %s; "
                    "falling back to local prefill",
                    job.request_id,
                    decode.address,
                    code.name,
                    error.details(),
                )
                self.metrics.local_prefill.labels(
                    reason=router_metrics.REASON_KV_TRANSFER_FAILED
                ).inc()
                # The first token is already sent: prefill the prompt plus it
                # locally and continue with the second token.
                async for event in self._generate_local(
                    job, [*job.prompt_ids, first_token], job.max_tokens - 1
                ):
                    yield event
                return
            if finish_reason:
                yield TokenEvent([], finish_reason, "remote")
                return
            async for event in self._relay(job, decode.address, call, first_reply, "remote"):
                yield event
        finally:
            decode.router_inflight -= 1
            call.cancel()

    async def _generate_local(
        self, job: Job, prompt_ids: list[int], max_tokens: int
    ) -> AsyncIterator[TokenEvent]:
        """Generate with prefill on a decode replica, trying each until one admits it."""
        tried: list[str] = []
        exhausted = 0
        while True:
            decode = self.decode_pool.choose(exclude=tried)
            if decode is None:
                break
            tried.append(decode.address)
            request = worker_pb2.GenerateRequest(
                request_id=job.request_id if len(tried) == 1 else f"{job.request_id}-{len(tried)}",
                prompt=worker_pb2.TokenIds(ids=prompt_ids),
                sampling=job.sampling,
                max_tokens=max_tokens,
                ignore_eos=job.ignore_eos,
            )
            decode.router_inflight += 1
            call = decode.decode.Generate(request)
            try:
                try:
                    first_reply = await call.read()
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        exhausted += 1
                    elif code in REPLICA_DOWN_CODES:
                        decode.mark_failed(f"Generate {code.name}")
                    elif code == grpc.StatusCode.INVALID_ARGUMENT:
                        raise GenerationFailed(
                            f"decode replica {decode.address} rejected the request: "
                            f"{error.details()}"
                        ) from error
                    logger.warning(
                        "decode replica rejected request_id=%s decode=%s code=%s: %s; "
                        "trying another decode replica",
                        job.request_id,
                        decode.address,
                        code.name,
                        error.details(),
                    )
                    continue
                async for event in self._relay(job, decode.address, call, first_reply, "local"):
                    yield event
                return
            finally:
                decode.router_inflight -= 1
                call.cancel()
        if exhausted:
            raise Overloaded(f"all {exhausted} decode replicas have a full queue")
        raise NoReplica("no ready decode replica")

    async def _relay(
        self, job: Job, address: str, call, first_reply, prefill: str
    ) -> AsyncIterator[TokenEvent]:
        reply = first_reply
        while reply is not grpc.aio.EOF:
            if reply.finish_reason:
                # Let the call end with its status rather than be cancelled in
                # the caller's cleanup, which the replica would log as a cancel.
                await call.code()
                yield TokenEvent(list(reply.token_ids), reply.finish_reason, prefill)
                return
            yield TokenEvent(list(reply.token_ids), reply.finish_reason, prefill)
            try:
                reply = await call.read()
            except grpc.aio.AioRpcError as error:
                logger.error(
                    "generation failed mid-stream request_id=%s decode=%s code=%s: %s",
                    job.request_id,
                    address,
                    error.code().name,
                    error.details(),
                )
                raise GenerationFailed(
                    f"decode replica {address} failed mid-stream: {error.code().name}"
                ) from error
        # The stream ended without a finish reason. Treat it as a failure rather
        # than return a silently truncated output.
        raise GenerationFailed(f"decode replica {address} ended the stream without finishing")
