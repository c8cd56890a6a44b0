"""KVStore: byte budget, reservations, TTL expiry and lookups."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from disagg_worker.kv import DuplicateRequest, KVEntry, KVNotFound, KVStore, KVStoreFull


def make_entry(request_id: str, nbytes: int, created_at: float | None = None) -> KVEntry:
    tensor = torch.zeros(nbytes, dtype=torch.uint8)
    entry = KVEntry(request_id, [1, 2, 3], 7, [tensor], nbytes)
    if created_at is not None:
        entry.created_at = created_at
    return entry


def store_entry(store: KVStore, request_id: str, nbytes: int) -> KVEntry:
    entry = make_entry(request_id, nbytes)
    store.reserve(request_id, nbytes).commit(entry)
    return entry


def test_commit_then_claim_returns_entry():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    entry = store_entry(store, "a", 100)
    assert store.entries == 1
    assert store.used_bytes == 100
    assert store.claim("a") is entry
    assert store.entries == 0
    assert store.used_bytes == 0


def test_reserve_over_budget_raises_store_full():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store_entry(store, "a", 600)
    with pytest.raises(KVStoreFull, match="request_id=b"):
        store.reserve("b", 401)
    assert store.used_bytes == 600


def test_reservation_counts_toward_budget():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store.reserve("a", 700)
    assert store.used_bytes == 700
    with pytest.raises(KVStoreFull):
        store.reserve("b", 400)


def test_release_frees_reserved_bytes():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    reservation = store.reserve("a", 1000)
    reservation.release()
    assert store.used_bytes == 0
    store.reserve("b", 1000)
    assert store.used_bytes == 1000


def test_release_after_commit_keeps_entry():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    reservation = store.reserve("a", 100)
    reservation.commit(make_entry("a", 100))
    reservation.release()
    assert store.used_bytes == 100
    assert store.entries == 1


def test_released_id_can_be_reserved_again():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store.reserve("a", 100).release()
    store.reserve("a", 100)
    assert store.used_bytes == 100


def test_duplicate_of_stored_id_raises():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store_entry(store, "a", 100)
    with pytest.raises(DuplicateRequest, match="request_id=a"):
        store.reserve("a", 100)


def test_duplicate_of_reserved_id_raises():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store.reserve("a", 100)
    with pytest.raises(DuplicateRequest):
        store.reserve("a", 100)


def test_claim_unknown_raises_not_found():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    with pytest.raises(KVNotFound, match="request_id=missing"):
        store.claim("missing")


def test_claim_twice_raises_not_found():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store_entry(store, "a", 100)
    store.claim("a")
    with pytest.raises(KVNotFound):
        store.claim("a")


def test_claim_of_reserved_id_raises_not_found():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    store.reserve("a", 100)
    with pytest.raises(KVNotFound):
        store.claim("a")


def test_expire_drops_old_entries_only():
    store = KVStore(max_bytes=1000, ttl_seconds=10)
    now = time.monotonic()
    old, new = store.reserve("old", 100), store.reserve("new", 200)
    old.commit(make_entry("old", 100, created_at=now - 11))
    new.commit(make_entry("new", 200, created_at=now - 1))
    assert store.expire(now) == 1
    assert store.entries == 1
    assert store.used_bytes == 200
    assert store.expired_total == 1


def test_claim_after_ttl_raises_not_found():
    store = KVStore(max_bytes=1000, ttl_seconds=10)
    store.reserve("a", 100).commit(make_entry("a", 100, created_at=time.monotonic() - 11))
    with pytest.raises(KVNotFound, match="expired"):
        store.claim("a")


def test_reserve_expires_old_entries_first():
    store = KVStore(max_bytes=1000, ttl_seconds=10)
    store.reserve("old", 900).commit(make_entry("old", 900, created_at=time.monotonic() - 11))
    store.reserve("b", 900)
    assert store.used_bytes == 900


def test_commit_of_other_id_raises():
    store = KVStore(max_bytes=1000, ttl_seconds=60)
    reservation = store.reserve("a", 100)
    with pytest.raises(ValueError, match="does not match"):
        reservation.commit(make_entry("b", 100))


def test_invalid_limits_raise():
    with pytest.raises(ValueError, match="max_bytes"):
        KVStore(max_bytes=0, ttl_seconds=60)
    with pytest.raises(ValueError, match="ttl_seconds"):
        KVStore(max_bytes=10, ttl_seconds=0)


def test_concurrent_reservations_never_overcommit():
    store = KVStore(max_bytes=10_000, ttl_seconds=60)
    granted: list[str] = []
    lock = threading.Lock()

    def reserve(index: int) -> None:
        try:
            store.reserve(f"r{index}", 1000)
        except KVStoreFull:
            return
        with lock:
            granted.append(f"r{index}")

    threads = [threading.Thread(target=reserve, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 10
    assert store.used_bytes == 10_000


def test_reading_used_bytes_drops_expired_entries():
    store = KVStore(max_bytes=1000, ttl_seconds=10)
    store.reserve("old", 300).commit(make_entry("old", 300, created_at=time.monotonic() - 11))
    assert store.used_bytes == 0
    assert store.entries == 0
