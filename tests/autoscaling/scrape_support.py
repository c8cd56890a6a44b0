"""A replica's /metrics endpoint for the scrape tests: a real HTTP server on a loopback address.

Each `MetricsServer` binds its own 127.0.0.x address, so several of them share
one port as pods of one pool do. Its body comes from the worker's and the
router's own metric registries (`worker_text`, `router_text`), or is set by
hand to test malformed text.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from disagg_worker.metrics import WorkerMetrics
from disagg_worker.router.metrics import REASON_NO_PREFILL_REPLICA, RouterMetrics
from prometheus_client import generate_latest


def worker_text(role: str, queue_depth: int, in_flight: int) -> str:
    """Return the /metrics text of a worker replica with this load."""
    metrics = WorkerMetrics(role)
    metrics.track_load(lambda: queue_depth, lambda: in_flight)
    return generate_latest(metrics.registry).decode()


def router_text(no_prefill_replica: int, short_prompt: int = 0) -> str:
    """Return the /metrics text of a router that prefilled this many requests locally."""
    metrics = RouterMetrics()
    if no_prefill_replica:
        metrics.local_prefill.labels(REASON_NO_PREFILL_REPLICA).inc(no_prefill_replica)
    if short_prompt:
        metrics.local_prefill.labels("short_prompt").inc(short_prompt)
    return generate_latest(metrics.registry).decode()


class MetricsServer:
    """Serve `text` on http://HOST:PORT/metrics with `status`, after `delay` seconds."""

    def __init__(self, host: str, port: int = 0, text: str = "") -> None:
        self.host = host
        self.port = port
        self.text = text
        self.status = 200
        self.delay = 0.0
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(text=self.text, status=self.status, content_type="text/plain")

    async def start(self) -> MetricsServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
