"""Decode service of a decode or aggregated replica: stream generated tokens.

`Generate` continues a request either from a KV cache that a prefill
replica sent earlier (`remote_kv`, claimed from the `KVStore`) or from its
prompt (`prompt`, local prefill on this replica). The `DecodeEngine` runs
the request in its batch on its own thread and reports tokens through a
callback. This service hands them to the gRPC stream through an asyncio
queue.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from disagg_worker import kv as kv_cache
from disagg_worker import metrics as m
from disagg_worker.engine import DecodeRequest, Draining, QueueFull
from disagg_worker.engine.decode import FINISH_CANCELLED, FINISH_ERROR
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.proto import worker_pb2_grpc
from disagg_worker.server.common import (
    InvalidRequest,
    ReplicaState,
    abort_draining,
    abort_invalid,
    check_prompt,
    check_request_id,
    sampling_from_proto,
)

logger = logging.getLogger(__name__)

# Local-prefill reason label: the router sent the prompt to this replica.
LOCAL_PREFILL_REQUESTED = "requested"


class EngineEnded(Exception):
    """The engine ended a request without a normal finish reason."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class DecodeService(worker_pb2_grpc.DecodeServicer):
    def __init__(
        self,
        engine,
        loaded,
        store: kv_cache.KVStore,
        metrics: m.WorkerMetrics,
        state: ReplicaState,
    ) -> None:
        self.engine = engine
        self.loaded = loaded
        self.store = store
        self.metrics = metrics
        self.state = state

    def _build_request(self, request: pb.GenerateRequest) -> DecodeRequest:
        """Validate the parameters and build the engine request (without claiming any KV)."""
        check_request_id(request.request_id)
        if request.max_tokens < 1:
            raise InvalidRequest(f"invalid max_tokens: {request.max_tokens}; it must be at least 1")
        sampling = sampling_from_proto(request.sampling, request.HasField("sampling"))
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidRequest(
                "invalid source: neither remote_kv nor prompt is set; set one of them"
            )
        if source == "remote_kv" and not request.remote_kv:
            raise InvalidRequest("invalid remote_kv: false; set it to true or send a prompt")
        prompt_ids = None
        if source == "prompt":
            prompt_ids = list(request.prompt.ids)
            check_prompt(prompt_ids, self.loaded.vocab_size, self.loaded.max_context, "prompt.ids")
        return DecodeRequest(
            request_id=request.request_id,
            max_tokens=request.max_tokens,
            sampling=sampling,
            ignore_eos=request.ignore_eos,
            prompt_ids=prompt_ids,
        )

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        """Admit one request into the decode batch and stream its tokens.

        1. Reject while draining and on invalid parameters.
        2. With remote_kv, claim the received KV cache (NOT_FOUND if absent).
        3. Submit to the engine; the engine thread posts tokens to a queue.
        4. Forward every event until a finish reason; a client cancel
           cancels the request in the engine, which frees its slot.
        """
        request_id = request.request_id
        received_at = time.monotonic()
        if self.state.draining:
            self.metrics.reject(m.REJECT_DRAINING)
            await abort_draining(context, request_id, self.state.role)
        try:
            decode_request = self._build_request(request)
        except InvalidRequest as error:
            self.metrics.reject(m.REJECT_INVALID)
            await abort_invalid(context, request_id, error)

        entry = None
        if decode_request.prompt_ids is None:
            try:
                entry = self.store.claim(request_id)
            except kv_cache.KVNotFound as error:
                self.metrics.reject(m.REJECT_KV_NOT_FOUND)
                logger.warning("rejected request_id=%s: %s", request_id, error)
                await context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"{error}; prefill again or send the prompt for local prefill",
                )
            decode_request.kv = entry
        else:
            self.metrics.local_prefill.labels(LOCAL_PREFILL_REQUESTED).inc()

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[list[int], str]] = asyncio.Queue()

        def on_event(token_ids, finish_reason) -> None:
            # Called on the engine thread.
            loop.call_soon_threadsafe(events.put_nowait, (list(token_ids), finish_reason or ""))

        try:
            self.engine.submit(decode_request, on_event)
        except QueueFull as error:
            self._restore_kv(entry)
            self.metrics.reject(m.REJECT_QUEUE_FULL)
            logger.warning("rejected request_id=%s: %s", request_id, error)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"decode queue full ({error}); retry later or on another decode replica",
            )
        except ValueError as error:
            self._restore_kv(entry)
            self.metrics.reject(m.REJECT_INVALID)
            logger.warning("rejected request_id=%s: %s", request_id, error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Draining as error:
            self._restore_kv(entry)
            self.metrics.reject(m.REJECT_DRAINING)
            logger.info("rejected request_id=%s: %s", request_id, error)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the {self.state.role} replica is draining ({error}); use another replica",
            )

        self.state.active_calls += 1
        finished = False
        try:
            async for response in self._stream(request_id, events, received_at, entry is None):
                yield response
            finished = True
        except EngineEnded as error:
            finished = True
            logger.warning("request_id=%s ended early: %s", request_id, error)
            await context.abort(error.code, str(error))
        finally:
            self.state.active_calls -= 1
            if not finished:
                # The client cancelled, the deadline passed or the stream broke.
                self.engine.cancel(request_id)
                logger.info("cancelled request_id=%s; freed its batch slot", request_id)

    async def _stream(self, request_id, events: asyncio.Queue, received_at: float, local: bool):
        last_token_at = None
        while True:
            token_ids, finish_reason = await events.get()
            now = time.monotonic()
            if token_ids:
                if last_token_at is None:
                    if local:
                        self.metrics.time_to_first_token.observe(now - received_at)
                else:
                    self.metrics.inter_token_latency.observe((now - last_token_at) / len(token_ids))
                last_token_at = now
                self.metrics.generation_tokens.inc(len(token_ids))
            if finish_reason in (FINISH_CANCELLED, FINISH_ERROR):
                self._ended_early(request_id, finish_reason)
            yield pb.GenerateResponse(token_ids=token_ids, finish_reason=finish_reason)
            if finish_reason:
                self.metrics.request_duration.observe(now - received_at)
                logger.debug("finished request_id=%s reason=%s", request_id, finish_reason)
                return

    def _ended_early(self, request_id: str, finish_reason: str) -> None:
        """Turn an engine-side end (error, or stop during shutdown) into a gRPC status."""
        if finish_reason == FINISH_ERROR:
            raise EngineEnded(
                grpc.StatusCode.INTERNAL,
                f"decoding request_id={request_id} failed in the engine; see the replica's log",
            )
        raise EngineEnded(
            grpc.StatusCode.UNAVAILABLE,
            f"the {self.state.role} replica stopped before request_id={request_id} finished; "
            "retry on another replica",
        )

    def _restore_kv(self, entry: kv_cache.KVEntry | None) -> None:
        """Put a claimed KV cache back, so a retry of the same request can still use it."""
        if entry is None:
            return
        try:
            self.store.reserve(entry.request_id, entry.nbytes).commit(entry)
        except (kv_cache.KVStoreFull, kv_cache.DuplicateRequest) as error:
            logger.warning(
                "dropped KV cache request_id=%s after a rejected Generate: %s",
                entry.request_id,
                error,
            )
