"""Request checks and state shared by the gRPC services of one worker replica."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.sampling import SamplingParams

logger = logging.getLogger(__name__)

PREFILL = "prefill"
DECODE = "decode"
AGGREGATED = "aggregated"
ROLES = (PREFILL, DECODE, AGGREGATED)


class InvalidRequest(Exception):
    """A request parameter is out of range; the message names the field and the fix."""


class ReplicaState:
    """Lifecycle of one replica: loaded, draining, and the RPCs running on it.

    The services consult `draining` before admitting a request, and drain
    waits until `active_calls` reaches zero.
    """

    def __init__(self, role: str) -> None:
        self.role = role
        self.loaded = False
        self.draining = False
        # Prefill and Generate calls currently being served.
        self.active_calls = 0

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining


def sampling_from_proto(message: pb.SamplingParams, has_field: bool) -> SamplingParams:
    """Convert the protocol's sampling settings; raise InvalidRequest naming the bad field."""
    if not has_field:
        return SamplingParams()
    # The protocol documents top_p 0 as "no filtering", which SamplingParams spells 1.
    top_p = message.top_p if message.top_p > 0 else 1.0
    seed = message.seed if message.HasField("seed") else None
    try:
        return SamplingParams(temperature=message.temperature, top_p=top_p, seed=seed)
    except ValueError as error:
        raise InvalidRequest(f"invalid sampling: {error}") from error


def check_request_id(request_id: str) -> None:
    if not request_id:
        raise InvalidRequest("invalid request_id: empty; set a unique id per request")


def check_prompt(token_ids: Sequence[int], vocab_size: int, max_context: int, field: str) -> None:
    """Check that a prompt is non-empty, within the context, and made of known token ids."""
    if not token_ids:
        raise InvalidRequest(f"invalid {field}: empty; send at least one token id")
    # At least one position must stay free for the first generated token.
    if len(token_ids) >= max_context:
        raise InvalidRequest(
            f"invalid {field}: {len(token_ids)} tokens leave no room in the model context of "
            f"{max_context}; shorten the prompt"
        )
    largest = max(token_ids)
    if largest >= vocab_size:
        raise InvalidRequest(
            f"invalid {field}: token id {largest} is outside the vocabulary of {vocab_size} ids"
        )


async def abort_invalid(
    context: grpc.aio.ServicerContext, request_id: str, error: InvalidRequest
) -> None:
    logger.warning("rejected request_id=%s: %s", request_id, error)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))


async def abort_draining(context: grpc.aio.ServicerContext, request_id: str, role: str) -> None:
    logger.info("rejected request_id=%s: the %s replica is draining", request_id, role)
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        f"the {role} replica is draining and admits no new requests; use another replica",
    )
