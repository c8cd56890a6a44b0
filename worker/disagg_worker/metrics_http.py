"""HTTP endpoint of a worker replica: Prometheus metrics and Kubernetes probes.

Routes:
- `/metrics`: the replica's `CollectorRegistry` in the Prometheus text format.
- `/health/live`: 200 while the process serves HTTP at all.
- `/health/ready`: 200 once the model is loaded and while the replica is not
  draining, 503 otherwise. The readiness probe thus takes the pod out of its
  Service during the drain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)


class MetricsHttpServer:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self.registry = registry
        self.ready = ready
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health/live", self._live)
        app.router.add_get("/health/ready", self._ready)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready: model loading or replica draining\n")

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); return the bound port."""
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        logger.info("metrics endpoint listening host=%s port=%s", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            logger.info("metrics endpoint stopped port=%s", self.port)
