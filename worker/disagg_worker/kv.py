"""KV cache tensors: conversion to and from transformers caches, and the decode-side store.

The payload of one request's KV cache is a flat list of 2 * num_layers
tensors, each [1, kv_heads, tokens, head_dim], in the order layer 0 key,
layer 0 value, layer 1 key, ... The prefill engine produces it with
`cache_to_tensors`. The KV transfer moves it as raw bytes (`tensors_to_bytes`,
`tensors_from_bytes`). The decode replica keeps it in a `KVStore` until the
matching Decode.Generate call claims it. The decode engine then turns it
back into a cache with `tensors_to_cache`.

`KVStore` protocol, as the KV transfer receiver uses it:
1. `reserve(request_id, nbytes)` when the header arrives. The budget counts
   reserved bytes, so concurrent transfers cannot overcommit.
2. `reservation.commit(entry)` after the last chunk, or
   `reservation.release()` when the stream breaks (the bytes are freed).
3. The decode side calls `claim(request_id)`, which removes the entry, so a
   second claim raises KVNotFound. Entries nobody claims expire after
   `ttl_seconds`: `reserve`, `claim`, `used_bytes` and `entries` drop them
   first, so a metrics scrape also frees them on an idle replica.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

logger = logging.getLogger(__name__)


class KVStoreFull(Exception):
    """The store has no room for a reservation; maps to RESOURCE_EXHAUSTED."""


class DuplicateRequest(Exception):
    """The request id is already stored or reserved; maps to ALREADY_EXISTS."""


class KVNotFound(Exception):
    """No entry has this request id (never arrived, claimed or expired); maps to NOT_FOUND."""


def cache_to_tensors(cache: DynamicCache) -> list[torch.Tensor]:
    """Flatten a cache into [layer 0 key, layer 0 value, layer 1 key, ...]."""
    tensors: list[torch.Tensor] = []
    for layer in cache.layers:
        tensors.append(layer.keys)
        tensors.append(layer.values)
    return tensors


def tensors_to_cache(
    tensors: Sequence[torch.Tensor], device: torch.device | None = None
) -> DynamicCache:
    """Rebuild a DynamicCache from the flat list `cache_to_tensors` returns."""
    if len(tensors) % 2:
        raise ValueError(
            f"KV payload needs a key and a value per layer, got {len(tensors)} tensors"
        )
    pairs = []
    for index in range(0, len(tensors), 2):
        keys, values = tensors[index], tensors[index + 1]
        if device is not None:
            keys, values = keys.to(device), values.to(device)
        pairs.append((keys, values))
    return DynamicCache(pairs)


def kv_shapes(
    num_layers: int, num_kv_heads: int, tokens: int, head_dim: int
) -> list[tuple[int, ...]]:
    """Return the 2 * num_layers payload shapes for a prompt of `tokens` tokens."""
    return [(1, num_kv_heads, tokens, head_dim)] * (2 * num_layers)


def tensors_to_bytes(tensors: Sequence[torch.Tensor]) -> bytes:
    """Concatenate the raw bytes of `tensors` (C-contiguous, native little-endian)."""
    return b"".join(_raw_bytes(tensor) for tensor in tensors)


def tensors_from_bytes(
    payload: bytes | bytearray | memoryview,
    shapes: Sequence[Sequence[int]],
    dtype: torch.dtype,
) -> list[torch.Tensor]:
    """Split a payload written by `tensors_to_bytes` back into CPU tensors.

    A bytearray is used in place, so the tensors share its memory; bytes and
    memoryviews are copied once into a new buffer.
    """
    element_size = torch.empty((), dtype=dtype).element_size()
    sizes = [_numel(shape) * element_size for shape in shapes]
    if sum(sizes) != len(payload):
        raise ValueError(
            f"KV payload has {len(payload)} bytes but the shapes need {sum(sizes)} bytes"
        )
    # torch.frombuffer needs a writable buffer; the tensors are views into it.
    writable = payload if isinstance(payload, bytearray) else bytearray(payload)
    buffer = torch.frombuffer(writable, dtype=torch.uint8) if payload else None
    tensors: list[torch.Tensor] = []
    offset = 0
    for shape, size in zip(shapes, sizes, strict=True):
        if size == 0:
            tensors.append(torch.empty(tuple(shape), dtype=dtype))
            continue
        chunk = buffer[offset : offset + size]
        tensors.append(chunk.view(dtype).reshape(tuple(shape)))
        offset += size
    return tensors


def tensors_nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


@dataclass
class KVEntry:
    """One request's KV cache as received from a prefill replica."""

    request_id: str
    prompt_token_ids: list[int]
    first_token_id: int
    tensors: list[torch.Tensor]
    nbytes: int
    created_at: float = field(default_factory=time.monotonic)


class KVReservation:
    """Bytes set aside in a KVStore for one incoming transfer; commit or release it once."""

    def __init__(self, store: KVStore, request_id: str, nbytes: int) -> None:
        self._store = store
        self.request_id = request_id
        self.nbytes = nbytes
        self._done = False

    def commit(self, entry: KVEntry) -> None:
        """Store `entry` in place of the reservation."""
        self._store._commit(self, entry)
        self._done = True

    def release(self) -> None:
        """Free the reserved bytes; a no-op after commit or an earlier release."""
        if not self._done:
            self._store._release(self)
            self._done = True

    @property
    def done(self) -> bool:
        return self._done


class KVStore:
    """Thread-safe store of received KV caches, bounded in bytes and age."""

    def __init__(self, max_bytes: int, ttl_seconds: float) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes!r}")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, KVEntry] = {}
        self._reserved: dict[str, int] = {}
        self._used_bytes = 0
        self.expired_total = 0

    @property
    def used_bytes(self) -> int:
        """Bytes of stored entries plus open reservations, after dropping expired entries."""
        self.expire()
        with self._lock:
            return self._used_bytes

    @property
    def entries(self) -> int:
        """Number of stored (committed, unclaimed) entries, after dropping expired ones."""
        self.expire()
        with self._lock:
            return len(self._entries)

    def reserve(self, request_id: str, nbytes: int) -> KVReservation:
        """Set aside `nbytes` for `request_id`, expiring old entries first.

        Raises DuplicateRequest when the id is stored or reserved, KVStoreFull
        when the bytes do not fit, ValueError on a negative size.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes!r} for request_id={request_id}")
        self.expire()
        with self._lock:
            if request_id in self._entries or request_id in self._reserved:
                raise DuplicateRequest(
                    f"KV cache for request_id={request_id} is already stored or arriving"
                )
            if self._used_bytes + nbytes > self.max_bytes:
                raise KVStoreFull(
                    f"KV store full: request_id={request_id} needs {nbytes} bytes, "
                    f"{self.max_bytes - self._used_bytes} of {self.max_bytes} free"
                )
            self._reserved[request_id] = nbytes
            self._used_bytes += nbytes
        return KVReservation(self, request_id, nbytes)

    def claim(self, request_id: str) -> KVEntry:
        """Remove and return the entry of `request_id`; raise KVNotFound if absent or expired."""
        self.expire()
        with self._lock:
            entry = self._entries.pop(request_id, None)
            if entry is None:
                raise KVNotFound(
                    f"no KV cache for request_id={request_id}: it never arrived, "
                    f"was already claimed or expired after {self.ttl_seconds:g} s"
                )
            self._used_bytes -= entry.nbytes
        return entry

    def expire(self, now: float | None = None) -> int:
        """Drop entries older than ttl_seconds (by time.monotonic); return how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [
                entry
                for entry in self._entries.values()
                if now - entry.created_at > self.ttl_seconds
            ]
            for entry in stale:
                del self._entries[entry.request_id]
                self._used_bytes -= entry.nbytes
            self.expired_total += len(stale)
        for entry in stale:
            logger.warning(
                "expired KV cache request_id=%s bytes=%d age_s=%.1f",
                entry.request_id,
                entry.nbytes,
                now - entry.created_at,
            )
        return len(stale)

    def _commit(self, reservation: KVReservation, entry: KVEntry) -> None:
        if reservation.done:
            raise RuntimeError(f"reservation for request_id={reservation.request_id} already ended")
        if entry.request_id != reservation.request_id:
            raise ValueError(
                f"entry request_id={entry.request_id} does not match the reservation "
                f"request_id={reservation.request_id}"
            )
        with self._lock:
            reserved = self._reserved.pop(reservation.request_id)
            # The entry is charged what it holds; a smaller entry gives bytes back.
            self._used_bytes += entry.nbytes - reserved
            self._entries[entry.request_id] = entry

    def _release(self, reservation: KVReservation) -> None:
        with self._lock:
            reserved = self._reserved.pop(reservation.request_id, None)
            if reserved is not None:
                self._used_bytes -= reserved


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    # Through uint8 because numpy has no bfloat16.
    return flat.view(torch.uint8).numpy().tobytes()


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count
