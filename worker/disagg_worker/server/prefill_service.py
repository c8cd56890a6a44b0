"""Prefill service of a prefill replica: run the prompt, ship its KV cache, return the first token.

The router calls `Prefill` with the decode replica that will continue the
request. This service admits the request through the `PrefillEngine`,
streams the resulting KV cache to that replica with a `KVSender`, and
replies once the decode replica acknowledged it.
"""

from __future__ import annotations

import logging
import time

import grpc

from disagg_worker import metrics as m
from disagg_worker.engine import Draining, QueueFull
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
from disagg_worker.server.kv_transfer import KVPayload, KVSender, KVTransferError

logger = logging.getLogger(__name__)


class PrefillService(worker_pb2_grpc.PrefillServicer):
    def __init__(
        self, engine, loaded, sender: KVSender, metrics: m.WorkerMetrics, state: ReplicaState
    ):
        self.engine = engine
        self.loaded = loaded
        self.sender = sender
        self.metrics = metrics
        self.state = state

    async def Prefill(
        self, request: pb.PrefillRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrefillResponse:
        """Prefill one request for the decode replica at `request.decode_address`.

        1. Reject while draining and on invalid parameters.
        2. Admit through the engine's queue and run the prompt.
        3. Stream the KV cache to the decode replica and wait for its acknowledgement.
        """
        request_id = request.request_id
        received_at = time.monotonic()
        if self.state.draining:
            self.metrics.reject(m.REJECT_DRAINING)
            await abort_draining(context, request_id, self.state.role)
        try:
            check_request_id(request_id)
            prompt = list(request.prompt_token_ids)
            check_prompt(
                prompt, self.loaded.vocab_size, self.loaded.max_context, "prompt_token_ids"
            )
            if not request.decode_address:
                raise InvalidRequest(
                    "invalid decode_address: empty; set the host:port of the decode replica"
                )
            sampling = sampling_from_proto(request.sampling, request.HasField("sampling"))
        except InvalidRequest as error:
            self.metrics.reject(m.REJECT_INVALID)
            await abort_invalid(context, request_id, error)

        self.state.active_calls += 1
        try:
            return await self._prefill_and_send(request, prompt, sampling, received_at, context)
        finally:
            self.state.active_calls -= 1

    async def _prefill_and_send(self, request, prompt, sampling, received_at, context):
        request_id = request.request_id
        try:
            result = await self.engine.prefill(request_id, prompt, sampling)
        except QueueFull as error:
            self.metrics.reject(m.REJECT_QUEUE_FULL)
            logger.warning("rejected request_id=%s: %s", request_id, error)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"prefill queue full ({error}); retry later or on another prefill replica",
            )
        except Draining as error:
            self.metrics.reject(m.REJECT_DRAINING)
            logger.info("rejected request_id=%s: %s", request_id, error)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the prefill replica is draining ({error}); use another replica",
            )
        except ValueError as error:
            self.metrics.reject(m.REJECT_INVALID)
            logger.warning("rejected request_id=%s: %s", request_id, error)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except Exception as error:
            # The engine already logged the traceback with the request id.
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"prefill failed request_id={request_id}: {type(error).__name__}: {error}",
            )
        self.metrics.prompt_tokens.inc(len(prompt))
        self.metrics.generation_tokens.inc(1)
        self.metrics.time_to_first_token.observe(time.monotonic() - received_at)

        payload = KVPayload(
            request_id=request_id,
            fingerprint=self.loaded.fingerprint,
            tensors=result.tensors,
            prompt_token_ids=prompt,
            first_token_id=result.first_token_id,
        )
        try:
            transfer = await self.sender.send(request.decode_address, payload)
        except KVTransferError as error:
            self.metrics.kv_transfer_failures.labels(error.reason).inc()
            logger.warning("KV transfer failed request_id=%s: %s", request_id, error)
            await context.abort(error.code, str(error))
        self.metrics.kv_transfer_bytes.labels(m.SENT).inc(transfer.bytes_sent)
        self.metrics.kv_transfer_seconds.labels(m.SENT).observe(transfer.seconds)
        self.metrics.request_duration.observe(time.monotonic() - received_at)
        logger.debug(
            "prefilled request_id=%s tokens=%d kv_bytes=%d transfer_seconds=%.4f",
            request_id,
            len(prompt),
            transfer.bytes_sent,
            transfer.seconds,
        )
        return pb.PrefillResponse(
            first_token_id=result.first_token_id,
            prefill_seconds=result.prefill_seconds,
            kv_bytes=transfer.bytes_sent,
            transfer_seconds=transfer.seconds,
            queue_seconds=result.queue_seconds,
        )
