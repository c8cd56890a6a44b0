"""The operator serves kopf's liveness probe while it runs."""

from __future__ import annotations

import socket

import aiohttp
from disagg_operator.handlers import HandlerOptions
from runtime_support import NAMESPACE, OperatorThread, eventually_async


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_liveness_probe_answers_ok(cluster):
    url = f"http://127.0.0.1:{free_port()}/healthz"
    options = HandlerOptions(resync_seconds=None, autoscaler=False)
    runner = OperatorThread(options, namespaces=[NAMESPACE], liveness_endpoint=url)
    await runner.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def probe_ok() -> None:
                try:
                    async with session.get(url) as response:
                        assert response.status == 200
                except aiohttp.ClientConnectionError as error:
                    raise AssertionError(f"GET {url} failed: {error}") from error

            await eventually_async(probe_ok)
    finally:
        await runner.stop()
