"""A replica that does not respond: one start-up warning, one line per failed request."""

from __future__ import annotations

import asyncio
import socket
import time
from types import SimpleNamespace

import pytest


@pytest.fixture
def closed_address() -> SimpleNamespace:
    """An address on 127.0.0.1 where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return SimpleNamespace(address=f"127.0.0.1:{port}")


def first_check_warnings(caplog, address: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "first health check" in record.getMessage() and address in record.getMessage()
    ]


async def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_warns_once_per_unreachable_replica(start_router, closed_address, caplog):
    caplog.set_level("WARNING", logger="disagg_worker.client")
    await start_router(decode=[closed_address])

    assert await wait_for(lambda: first_check_warnings(caplog, closed_address.address))
    # Later polls that fail again add no line.
    await asyncio.sleep(1.5)
    assert len(first_check_warnings(caplog, closed_address.address)) == 1


async def test_failed_request_logged_once(start_router, closed_address, caplog):
    router = await start_router(decode=[closed_address])
    caplog.set_level("INFO", logger="disagg_worker.router.app")
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": 2}

    async with router.post("/v1/completions", body=body) as response:
        assert response.status == 503

    lines = [
        r
        for r in caplog.records
        if r.name == "disagg_worker.router.app" and r.getMessage().startswith("request ")
    ]
    assert [r.levelname for r in lines] == ["ERROR"]
    assert "status=503" in lines[0].getMessage()
