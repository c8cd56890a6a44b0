"""Remote prefill, its retry and every fallback to local prefill, and 429."""

from __future__ import annotations

import grpc
import pytest

from .conftest import REPLY_TEXT

LONG_PROMPT = list(range(100, 140))


def completion(prompt=LONG_PROMPT, **extra):
    return {"model": "SmolLM2-135M-Instruct", "prompt": prompt, "max_tokens": 50, **extra}


async def text_of(router, body):
    async with router.post("/v1/completions", body=body) as response:
        payload = await response.json()
    assert response.status == 200, payload
    return payload["choices"][0]["text"]


async def test_long_prompt_uses_remote_prefill(start_router, fake_workers):
    prefill, decode = await fake_workers("prefill"), await fake_workers("decode")
    router = await start_router(prefill=[prefill], decode=[decode])
    assert await text_of(router, completion()) == REPLY_TEXT
    assert prefill.prefill_calls[0].decode_address == decode.address
    assert decode.generate_calls[0].remote_kv


async def test_short_prompt_uses_local_prefill(start_router, fake_workers):
    prefill, decode = await fake_workers("prefill"), await fake_workers("decode")
    router = await start_router(prefill=[prefill], decode=[decode], min_remote_prefill_tokens=64)
    assert await text_of(router, completion()) == REPLY_TEXT
    assert not prefill.prefill_calls
    assert router.counter("disagg_local_prefill_total", reason="short_prompt") == 1


async def test_no_prefill_replica_uses_local(start_router, fake_workers):
    decode = await fake_workers("decode")
    router = await start_router(decode=[decode])
    assert await text_of(router, completion()) == REPLY_TEXT
    assert router.counter("disagg_local_prefill_total", reason="no_prefill_replica") == 1


async def test_failed_prefill_retried_on_other(start_router, fake_workers):
    broken, healthy = await fake_workers("prefill"), await fake_workers("prefill")
    decode = await fake_workers("decode")
    broken.prefill_error = grpc.StatusCode.INTERNAL
    router = await start_router(prefill=[broken, healthy], decode=[decode])
    for _ in range(2):
        assert await text_of(router, completion()) == REPLY_TEXT
    assert len(healthy.prefill_calls) == 2
    assert router.counter("disagg_prefill_retries_total") == len(broken.prefill_calls)
    assert router.counter("disagg_local_prefill_total", reason="prefill_failed") == 0


async def test_two_failed_prefills_fall_back_to_local(start_router, fake_workers):
    first, second = await fake_workers("prefill"), await fake_workers("prefill")
    decode = await fake_workers("decode")
    first.prefill_error = second.prefill_error = grpc.StatusCode.INTERNAL
    router = await start_router(prefill=[first, second], decode=[decode])
    assert await text_of(router, completion()) == REPLY_TEXT
    assert router.counter("disagg_local_prefill_total", reason="prefill_failed") == 1
    assert decode.generate_calls[-1].WhichOneof("source") == "prompt"


async def test_rejected_kv_transfer_falls_back_to_local(start_router, fake_workers):
    prefill, decode = await fake_workers("prefill"), await fake_workers("decode")
    prefill.prefill_error = grpc.StatusCode.FAILED_PRECONDITION
    router = await start_router(prefill=[prefill], decode=[decode])
    assert await text_of(router, completion()) == REPLY_TEXT
    assert router.counter("disagg_local_prefill_total", reason="kv_transfer_failed") == 1
    assert len(prefill.prefill_calls) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_failed_transfer_not_retried(start_router, fake_workers, code):
    first, second = await fake_workers("prefill"), await fake_workers("prefill")
    decode = await fake_workers("decode")
    for prefill in (first, second):
        prefill.prefill_error = code
        prefill.prefill_error_details = "KV transfer request_id=x to 127.0.0.1:1 failed"
    router = await start_router(prefill=[first, second], decode=[decode])
    assert await text_of(router, completion()) == REPLY_TEXT
    assert router.counter("disagg_local_prefill_total", reason="kv_transfer_failed") == 1
    assert router.counter("disagg_prefill_retries_total") == 0
    assert len(first.prefill_calls) + len(second.prefill_calls) == 1


async def test_missing_remote_kv_continues_locally(start_router, fake_workers, reply_ids):
    prefill, decode = await fake_workers("prefill"), await fake_workers("decode")
    decode.remote_kv_error = grpc.StatusCode.NOT_FOUND
    router = await start_router(prefill=[prefill], decode=[decode])
    await text_of(router, completion())
    assert router.counter("disagg_local_prefill_total", reason="kv_transfer_failed") == 1
    local = decode.generate_calls[-1]
    # The first token came from the prefill replica: local prefill includes it.
    assert list(local.prompt.ids) == [*LONG_PROMPT, reply_ids[0]]
    assert local.max_tokens == 49


@pytest.mark.parametrize("stream", [False, True])
async def test_every_decode_full_is_429(start_router, fake_workers, stream):
    first, second = await fake_workers("decode"), await fake_workers("decode")
    first.generate_error = second.generate_error = grpc.StatusCode.RESOURCE_EXHAUSTED
    router = await start_router(decode=[first, second])
    async with router.post("/v1/completions", body=completion(stream=stream)) as response:
        body = await response.json()
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert body["error"]["type"] == "rate_limit_error"
    assert len(first.generate_calls) == len(second.generate_calls) == 1


async def test_full_decode_skipped_for_other(start_router, fake_workers):
    full, free = await fake_workers("decode"), await fake_workers("decode")
    full.generate_error = grpc.StatusCode.RESOURCE_EXHAUSTED
    router = await start_router(decode=[full, free])
    for _ in range(3):
        assert await text_of(router, completion()) == REPLY_TEXT
    assert len(free.generate_calls) == 3


async def test_no_ready_decode_is_503(start_router, fake_workers):
    decode = await fake_workers("decode")
    router = await start_router(decode=[decode])
    await decode.stop()
    await router.router.pools["decode"].poll_once()
    async with router.post("/v1/completions", body=completion()) as response:
        body = await response.json()
    assert response.status == 503
    assert body["error"]["code"] == "no_replica"


async def test_failed_only_prefill_falls_back_without_retry(start_router, fake_workers, caplog):
    prefill, decode = await fake_workers("prefill"), await fake_workers("decode")
    prefill.prefill_error = grpc.StatusCode.INTERNAL
    router = await start_router(prefill=[prefill], decode=[decode])

    with caplog.at_level("WARNING", logger="disagg_worker.router.dispatch"):
        assert await text_of(router, completion()) == REPLY_TEXT

    assert router.counter("disagg_prefill_retries_total") == 0
    assert router.counter("disagg_local_prefill_total", reason="prefill_failed") == 1
    assert "no other prefill replica; falling back to local prefill" in caplog.text
    assert "retrying" not in caplog.text
