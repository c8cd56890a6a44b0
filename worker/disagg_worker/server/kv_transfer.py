"""KV transfer over gRPC: the decode side's receiver and the prefill side's sender.

A prefill replica calls `KVSender.send()` once per request. It opens one
client-streaming `disagg.v1.KVTransfer/Transfer` call to the decode replica
and sends a `KVHeader` followed by `KVChunk` messages. The decode replica's
`KVTransferService` validates the header against its own model before it
reserves or keeps anything, copies every chunk straight into one
preallocated buffer, and stores the finished entry in its `KVStore`, where
`Decode.Generate` claims it.

Chunk messages skip the protobuf message classes on both ends. The sender
writes the wire format of `KVTransferMessage{chunk: KVChunk{offset, data}}`
by hand, joining the tensor memory into the outgoing bytes with a single
copy, and the receiver parses that format into a memoryview of the
received bytes, so the payload is copied once more, into the buffer. The
bytes on the wire are ordinary protobuf: a client built from the generated
stubs interoperates, and messages the fast parser does not recognise go
through protobuf.

Limits: gRPC rejects a message larger than the receiver's
`grpc.max_receive_message_length` (the worker's --max-message-bytes) with
RESOURCE_EXHAUSTED before this code sees it, so the sender keeps each chunk
below that limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
import torch

from disagg_worker import kv as kv_cache
from disagg_worker import metrics as m
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.defaults import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = "disagg.v1.KVTransfer"
TRANSFER_METHOD = f"/{SERVICE_NAME}/Transfer"

# Bytes reserved for the field tags and lengths around a chunk's data.
CHUNK_OVERHEAD_BYTES = 32

# Protobuf wire-format tags: (field number << 3) | wire type.
_TAG_CHUNK = (2 << 3) | 2  # KVTransferMessage.chunk, length-delimited
_TAG_OFFSET = (1 << 3) | 0  # KVChunk.offset, varint
_TAG_DATA = (2 << 3) | 2  # KVChunk.data, length-delimited


# Transport settings added to both ends of a KV transfer channel. None of the
# HTTP/2 settings tried with `disagg bench kv-transfer` (frame size, flow
# control window, BDP probing, TCP read sizes) lowered the CPU cost per byte,
# so gRPC's defaults stay.
TRANSFER_CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = ()


def channel_options(
    max_message_bytes: int, extra: Sequence[tuple[str, int]] = ()
) -> list[tuple[str, int]]:
    """gRPC options for both ends of a KV transfer channel; `extra` entries come last and win."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *TRANSFER_CHANNEL_OPTIONS,
        *extra,
    ]


# ---------------------------------------------------------------------------
# Wire format of chunk messages.


@dataclass(frozen=True)
class ChunkParts:
    """A chunk to send: its payload offset and the buffers whose bytes it carries, in order."""

    offset: int
    parts: Sequence[memoryview]

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for part in self.parts)


@dataclass(frozen=True)
class ChunkView:
    """A received chunk: its payload offset and a view of its data in the received message."""

    offset: int
    data: memoryview


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buffer: memoryview, position: int, end: int) -> tuple[int, int]:
    """Decode a varint at `position`; return (value, position after it)."""
    value = 0
    shift = 0
    while position < end and shift < 64:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    raise ValueError("truncated varint")


def encode_message(message: pb.KVTransferMessage | ChunkParts) -> bytes:
    """Serialize a header message with protobuf and a chunk by hand, in one copy."""
    if isinstance(message, pb.KVTransferMessage):
        return message.SerializeToString()
    size = message.nbytes
    inner_prefix = b"%c%s%c%s" % (_TAG_OFFSET, _varint(message.offset), _TAG_DATA, _varint(size))
    inner_size = len(inner_prefix) + size
    prefix = b"%c%s%s" % (_TAG_CHUNK, _varint(inner_size), inner_prefix)
    return b"".join((prefix, *message.parts))


def decode_message(raw: bytes) -> pb.KVTransferMessage | ChunkView:
    """Parse a chunk without copying its data; anything else goes through protobuf."""
    chunk = _parse_chunk(memoryview(raw))
    if chunk is not None:
        return chunk
    message = pb.KVTransferMessage.FromString(raw)
    if message.WhichOneof("body") == "chunk":
        return ChunkView(message.chunk.offset, memoryview(message.chunk.data))
    return message


def _parse_chunk(view: memoryview) -> ChunkView | None:
    """Return the chunk of a message holding only KVTransferMessage.chunk, else None."""
    end = len(view)
    if end == 0 or view[0] != _TAG_CHUNK:
        return None
    try:
        inner_size, position = _read_varint(view, 1, end)
        if position + inner_size != end:
            return None
        offset = 0
        data = view[0:0]
        while position < end:
            tag, position = _read_varint(view, position, end)
            if tag == _TAG_OFFSET:
                offset, position = _read_varint(view, position, end)
            elif tag == _TAG_DATA:
                size, position = _read_varint(view, position, end)
                if position + size > end:
                    return None
                data = view[position : position + size]
                position += size
            else:
                return None
    except ValueError:
        return None
    return ChunkView(offset, data)


def iter_chunks(buffers: Sequence[memoryview], chunk_bytes: int) -> Iterator[ChunkParts]:
    """Cut the concatenation of `buffers` into chunks of `chunk_bytes` (the last may be shorter)."""
    offset = 0
    parts: list[memoryview] = []
    size = 0
    for buffer in buffers:
        position = 0
        while position < buffer.nbytes:
            take = min(chunk_bytes - size, buffer.nbytes - position)
            parts.append(buffer[position : position + take])
            size += take
            position += take
            if size == chunk_bytes:
                yield ChunkParts(offset, parts)
                offset += size
                parts = []
                size = 0
    if parts:
        yield ChunkParts(offset, parts)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """Return a flat byte view of a CPU copy of `tensor`, without a copy when it is already one."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------
# Receiver (decode replica).


class TransferRejected(Exception):
    """A transfer the receiver refuses; carries the gRPC status and the failure reason label."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ExpectedLayout:
    """Layout that the receiving replica's model requires of an incoming KV cache."""

    fingerprint: str
    dtype: torch.dtype
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_context: int

    @classmethod
    def of(cls, loaded) -> ExpectedLayout:
        return cls(
            fingerprint=loaded.fingerprint,
            dtype=loaded.dtype,
            num_layers=loaded.num_layers,
            num_kv_heads=loaded.num_kv_heads,
            head_dim=loaded.head_dim,
            max_context=loaded.max_context,
        )

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()


def validate_header(header: pb.KVHeader, expected: ExpectedLayout) -> list[tuple[int, ...]]:
    """Check a header against the local model; return the tensor shapes in payload order.

    Raises TransferRejected: FAILED_PRECONDITION on a fingerprint mismatch,
    INVALID_ARGUMENT on anything else that disagrees.
    """
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    request_id = header.request_id
    if not request_id:
        raise TransferRejected(invalid, m.FAILURE_INVALID, "invalid KV header: request_id is empty")
    if header.model_fingerprint != expected.fingerprint:
        raise TransferRejected(
            grpc.StatusCode.FAILED_PRECONDITION,
            m.FAILURE_FINGERPRINT_MISMATCH,
            f"KV transfer request_id={request_id} rejected: model fingerprint "
            f"{header.model_fingerprint or '(empty)'} of the sender differs from "
            f"{expected.fingerprint} of this replica; both replicas must serve the same "
            "model, weights and dtype",
        )

    def reject(problem: str) -> TransferRejected:
        return TransferRejected(
            invalid, m.FAILURE_INVALID, f"invalid KV header request_id={request_id}: {problem}"
        )

    if header.dtype != dtype_name(expected.dtype):
        raise reject(f"dtype {header.dtype!r} differs from {dtype_name(expected.dtype)!r}")
    if header.num_layers != expected.num_layers:
        raise reject(f"num_layers {header.num_layers} differs from {expected.num_layers}")
    tokens = len(header.prompt_token_ids)
    if tokens == 0:
        raise reject("prompt_token_ids is empty")
    if tokens >= expected.max_context:
        raise reject(
            f"{tokens} prompt tokens leave no room in the model context of {expected.max_context}"
        )
    if len(header.shapes) != 2 * expected.num_layers:
        raise reject(f"{len(header.shapes)} shapes, expected {2 * expected.num_layers}")

    expected_shape = (1, expected.num_kv_heads, tokens, expected.head_dim)
    shapes = []
    for index, shape in enumerate(header.shapes):
        dims = tuple(shape.dims)
        if dims != expected_shape:
            raise reject(f"shape {index} is {list(dims)}, expected {list(expected_shape)}")
        shapes.append(dims)

    total = sum(math.prod(dims) for dims in shapes) * expected.element_size
    if header.total_bytes != total:
        raise reject(f"total_bytes {header.total_bytes} differs from {total} implied by the shapes")
    return shapes


class KVTransferService:
    """Receives KV caches into a `KVStore`; the decode and aggregated replicas serve it."""

    def __init__(
        self,
        store: kv_cache.KVStore,
        expected: ExpectedLayout,
        metrics: m.WorkerMetrics,
        is_draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.expected = expected
        self.metrics = metrics
        self.is_draining = is_draining
        # Transfers whose header arrived and that are not acknowledged or failed yet.
        self.receiving = 0

    def handler(self) -> grpc.GenericRpcHandler:
        """Return the generic handler that serves KVTransfer/Transfer with the fast chunk codec."""
        method = grpc.stream_unary_rpc_method_handler(
            self.Transfer,
            request_deserializer=decode_message,
            response_serializer=pb.KVTransferAck.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Transfer": method})

    async def Transfer(
        self, request_iterator: AsyncIterator, context: grpc.aio.ServicerContext
    ) -> pb.KVTransferAck:
        """Receive one request's KV cache.

        1. Read the header and validate it against the local model.
        2. Reserve its bytes in the KV store (nothing is kept before this).
        3. Copy the chunks, in order, into one preallocated buffer.
        4. Check the byte count, then commit the entry to the store.
        A failure at any step releases the reservation and its buffer.
        """
        request_id = ""
        reservation = None
        started = time.monotonic()
        self.receiving += 1
        try:
            if self.is_draining():
                raise TransferRejected(
                    grpc.StatusCode.UNAVAILABLE,
                    m.FAILURE_DRAINING,
                    "KV transfer rejected: this replica is draining; send it to another replica",
                )
            header = await self._read_header(request_iterator)
            request_id = header.request_id
            shapes = validate_header(header, self.expected)
            reservation = self._reserve(request_id, header.total_bytes)

            # One uint8 buffer for the whole payload; the tensors become views of it.
            buffer = torch.empty(header.total_bytes, dtype=torch.uint8)
            received = await self._receive_chunks(
                request_iterator, request_id, memoryview(buffer.numpy()), header.total_bytes
            )
            if received != header.total_bytes:
                # A sender that cancels or disconnects usually ends the stream
                # like this too, rather than by cancelling this handler.
                raise TransferRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    m.FAILURE_INCOMPLETE,
                    f"KV transfer request_id={request_id} ended after {received} of "
                    f"{header.total_bytes} bytes",
                )

            entry = kv_cache.KVEntry(
                request_id=request_id,
                prompt_token_ids=list(header.prompt_token_ids),
                first_token_id=header.first_token_id,
                tensors=_split_tensors(buffer, shapes, self.expected.dtype),
                nbytes=header.total_bytes,
                created_at=time.monotonic(),
            )
            reservation.commit(entry)
            reservation = None
            seconds = time.monotonic() - started
            self.metrics.kv_transfer_bytes.labels(m.RECEIVED).inc(received)
            self.metrics.kv_transfer_seconds.labels(m.RECEIVED).observe(seconds)
            logger.debug(
                "received KV request_id=%s bytes=%d seconds=%.4f", request_id, received, seconds
            )
            return pb.KVTransferAck(bytes_received=received, seconds=seconds)
        except TransferRejected as error:
            self.metrics.kv_transfer_failures.labels(error.reason).inc()
            logger.warning(
                "KV transfer failed request_id=%s reason=%s: %s", request_id, error.reason, error
            )
            await context.abort(error.code, str(error))
        except asyncio.CancelledError:
            # The sender went away (disconnect, cancel or deadline) mid-transfer.
            self.metrics.kv_transfer_failures.labels(m.FAILURE_ABORTED).inc()
            logger.warning(
                "KV transfer aborted by the sender request_id=%s; discarded the partial entry",
                request_id,
            )
            raise
        except Exception:
            self.metrics.kv_transfer_failures.labels(m.FAILURE_INTERNAL).inc()
            logger.exception("KV transfer failed unexpectedly request_id=%s", request_id)
            raise
        finally:
            self.receiving -= 1
            if reservation is not None:
                reservation.release()

    async def _read_header(self, request_iterator: AsyncIterator) -> pb.KVHeader:
        async for message in request_iterator:
            if isinstance(message, pb.KVTransferMessage) and message.WhichOneof("body") == "header":
                return message.header
            got = "a chunk" if isinstance(message, ChunkView) else "a message without a body"
            raise TransferRejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                m.FAILURE_INVALID,
                f"invalid KV transfer: the first message must be a header, got {got}",
            )
        raise TransferRejected(
            grpc.StatusCode.INVALID_ARGUMENT,
            m.FAILURE_INVALID,
            "invalid KV transfer: the stream ended before a header arrived",
        )

    def _reserve(self, request_id: str, nbytes: int):
        try:
            return self.store.reserve(request_id, nbytes)
        except kv_cache.KVStoreFull as error:
            raise TransferRejected(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                m.FAILURE_STORE_FULL,
                f"KV transfer request_id={request_id} rejected: {error}",
            ) from error
        except kv_cache.DuplicateRequest as error:
            raise TransferRejected(
                grpc.StatusCode.ALREADY_EXISTS,
                m.FAILURE_DUPLICATE,
                f"KV transfer request_id={request_id} rejected: {error}",
            ) from error

    async def _receive_chunks(
        self, request_iterator: AsyncIterator, request_id: str, target: memoryview, total: int
    ) -> int:
        """Copy chunks into `target`; return the byte count received."""
        received = 0
        async for message in request_iterator:
            if not isinstance(message, ChunkView):
                got = (
                    "a second header" if message.WhichOneof("body") else "a message without a body"
                )
                raise TransferRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    m.FAILURE_INVALID,
                    f"invalid KV transfer request_id={request_id}: {got} arrived after "
                    f"{received} bytes; send one header, then only chunks",
                )
            if message.offset != received:
                raise TransferRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    m.FAILURE_INVALID,
                    f"invalid KV transfer request_id={request_id}: chunk at offset "
                    f"{message.offset} out of order, expected offset {received}",
                )
            end = received + message.data.nbytes
            if end > total:
                raise TransferRejected(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    m.FAILURE_INVALID,
                    f"invalid KV transfer request_id={request_id}: chunk at offset "
                    f"{received} ends at byte {end}, past total_bytes {total}",
                )
            target[received:end] = message.data
            received = end
        return received


def _split_tensors(
    buffer: torch.Tensor, shapes: Sequence[tuple[int, ...]], dtype: torch.dtype
) -> list[torch.Tensor]:
    """View consecutive slices of a uint8 buffer as tensors of `dtype` and `shapes`."""
    element_size = torch.empty((), dtype=dtype).element_size()
    tensors = []
    offset = 0
    for shape in shapes:
        size = math.prod(shape) * element_size
        tensors.append(buffer[offset : offset + size].view(dtype).view(shape))
        offset += size
    return tensors


# ---------------------------------------------------------------------------
# Sender (prefill replica).


class KVTransferError(Exception):
    """A KV transfer that did not complete; `code` is the gRPC status, `reason` the metric label."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class KVPayload:
    """One request's KV cache and the facts the header carries about it."""

    request_id: str
    fingerprint: str
    tensors: Sequence[torch.Tensor]
    prompt_token_ids: Sequence[int]
    first_token_id: int

    def header(self) -> pb.KVHeader:
        dtype = self.tensors[0].dtype if self.tensors else torch.float32
        return pb.KVHeader(
            request_id=self.request_id,
            model_fingerprint=self.fingerprint,
            dtype=dtype_name(dtype),
            num_layers=len(self.tensors) // 2,
            shapes=[pb.TensorShape(dims=list(t.shape)) for t in self.tensors],
            total_bytes=sum(t.numel() * t.element_size() for t in self.tensors),
            prompt_token_ids=list(self.prompt_token_ids),
            first_token_id=self.first_token_id,
        )


@dataclass(frozen=True)
class TransferResult:
    bytes_sent: int
    # Seconds from opening the call to the acknowledgement, on the sender's clock.
    seconds: float
    ack: pb.KVTransferAck


_REASON_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: m.FAILURE_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: m.FAILURE_TIMEOUT,
    grpc.StatusCode.FAILED_PRECONDITION: m.FAILURE_FINGERPRINT_MISMATCH,
    grpc.StatusCode.RESOURCE_EXHAUSTED: m.FAILURE_STORE_FULL,
    grpc.StatusCode.ALREADY_EXISTS: m.FAILURE_DUPLICATE,
    grpc.StatusCode.CANCELLED: m.FAILURE_ABORTED,
}


class KVSender:
    """Streams KV caches to decode replicas, with one cached channel per address."""

    def __init__(
        self,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        extra_channel_options: Sequence[tuple[str, int]] = (),
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"invalid chunk_bytes {chunk_bytes}: must be at least 1")
        if chunk_bytes + CHUNK_OVERHEAD_BYTES > max_message_bytes:
            raise ValueError(
                f"invalid chunk_bytes {chunk_bytes}: with {CHUNK_OVERHEAD_BYTES} bytes of "
                f"framing it exceeds max_message_bytes {max_message_bytes}; lower it"
            )
        self.chunk_bytes = chunk_bytes
        self.max_message_bytes = max_message_bytes
        self.timeout_seconds = timeout_seconds
        self.extra_channel_options = tuple(extra_channel_options)
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Transfers started and not yet acknowledged or failed.
        self.pending = 0

    def _transfer_method(self, address: str):
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=channel_options(self.max_message_bytes, self.extra_channel_options),
            )
            self._channels[address] = channel
            logger.info("opened KV transfer channel address=%s", address)
        return channel.stream_unary(
            TRANSFER_METHOD,
            request_serializer=encode_message,
            response_deserializer=pb.KVTransferAck.FromString,
        )

    async def send(
        self, address: str, payload: KVPayload, *, timeout_seconds: float | None = None
    ) -> TransferResult:
        """Stream `payload` to the decode replica at `address` and wait for its acknowledgement.

        Raises KVTransferError with the receiver's (or the transport's) status.
        """
        header = payload.header()
        buffers = [tensor_bytes(t) for t in payload.tensors]

        def messages() -> Iterator[pb.KVTransferMessage | ChunkParts]:
            yield pb.KVTransferMessage(header=header)
            yield from iter_chunks(buffers, self.chunk_bytes)

        transfer = self._transfer_method(address)
        timeout = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        started = time.monotonic()
        self.pending += 1
        try:
            ack = await transfer(messages(), timeout=timeout)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            reason = _REASON_BY_CODE.get(code, m.FAILURE_REJECTED)
            raise KVTransferError(
                code,
                reason,
                f"KV transfer request_id={payload.request_id} to {address} failed with "
                f"{code.name}: {error.details()}",
            ) from error
        finally:
            self.pending -= 1
        return TransferResult(header.total_bytes, time.monotonic() - started, ack)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        for channel in channels:
            await channel.close()
