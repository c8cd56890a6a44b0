"""A client that disconnects mid-stream cancels its generation on the decode replica."""

from __future__ import annotations

import asyncio
import time

import aiohttp


async def wait_for(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_disconnect_cancels_generate(start_router, fake_workers, reply_ids):
    decode = await fake_workers("decode")
    decode.reply_ids = reply_ids * 50
    decode.token_delay_s = 0.05
    router = await start_router(decode=[decode])
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": 200, "stream": True}
    async with (
        aiohttp.ClientSession() as session,
        session.post(router.url + "/v1/completions", json=body) as response,
    ):
        await response.content.readline()
        assert decode.inflight == 1
    # Leaving the block closed the connection mid-stream.
    assert await wait_for(lambda: decode.cancelled == 1)
    assert await wait_for(lambda: decode.inflight == 0)
    assert await wait_for(lambda: router.router.pools["decode"].inflight == 0)


async def test_disconnect_cancels_non_streaming(start_router, fake_workers, reply_ids):
    decode = await fake_workers("decode")
    decode.reply_ids = reply_ids * 50
    decode.token_delay_s = 0.05
    router = await start_router(decode=[decode])
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": 200}
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(session.post(router.url + "/v1/completions", json=body))
        assert await wait_for(lambda: decode.inflight == 1)
        request.cancel()
    assert await wait_for(lambda: decode.cancelled == 1)
    assert await wait_for(lambda: router.router.pools["decode"].inflight == 0)
