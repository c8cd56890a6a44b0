"""Pods with real /metrics servers for the autoscaler tests, in kmock and on loopback.

A `FakePod` is a pod object in kmock (labels of its pool, `status.podIP`, a
Ready condition) plus a real HTTP server on that IP, a 127.0.0.x address of
its own, serving the Prometheus text of a worker or router replica. All pods
of one test share one port, as the pods of a pool share the metrics port.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from typing import Any

import kmock
from aiohttp import web
from disagg_operator import constants as c
from disagg_operator.autoscale import tick
from disagg_operator.kube import Kube
from disagg_operator.reconcile import reconcile_once
from disagg_worker.metrics import WorkerMetrics
from disagg_worker.router.metrics import REASON_NO_PREFILL_REPLICA, RouterMetrics
from prometheus_client import generate_latest
from runtime_support import CR_RESOURCE, NAME, NAMESPACE, SPEC, apply, custom_resource, live

PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
PODS = "v1/pods"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.2 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.2", 0))
        return probe.getsockname()[1]


def autoscaled_spec(port: int, **autoscaling: Any) -> dict[str, Any]:
    """Return the test spec with metrics on `port`, a 1 s interval and no scale-down delay."""
    spec = copy.deepcopy(SPEC)
    spec["metricsPort"] = port
    spec["autoscaling"] = {
        "mode": "builtin",
        "intervalSeconds": 1,
        "scaleDownStabilizationSeconds": 0,
        **autoscaling,
    }
    return spec


def worker_text(role: str, queue_depth: int, in_flight: int) -> str:
    """Return the /metrics text of a worker replica with this load."""
    metrics = WorkerMetrics(role)
    metrics.track_load(lambda: queue_depth, lambda: in_flight)
    return generate_latest(metrics.registry).decode()


def router_text(no_prefill_replica: int) -> str:
    """Return the /metrics text of a router that prefilled this many requests locally."""
    metrics = RouterMetrics()
    if no_prefill_replica:
        metrics.local_prefill.labels(REASON_NO_PREFILL_REPLICA).inc(no_prefill_replica)
    return generate_latest(metrics.registry).decode()


class FakePod:
    """One pod of a pool: an object in kmock and a /metrics server on its own IP."""

    def __init__(self, name: str, role: str, ip: str, port: int) -> None:
        self.name = name
        self.role = role
        self.ip = ip
        self.port = port
        self.text = ""
        self._runner: web.AppRunner | None = None

    def load(self, queue_depth: int, in_flight: int = 0) -> None:
        self.text = worker_text(self.role, queue_depth, in_flight)

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": NAMESPACE,
                "labels": {
                    c.LABEL_NAME: c.APP_NAME,
                    c.LABEL_INSTANCE: NAME,
                    c.LABEL_COMPONENT: self.role,
                    c.LABEL_MANAGED_BY: c.MANAGER_NAME,
                    c.LABEL_DEPLOYMENT: NAME,
                    c.LABEL_ROLE: self.role,
                },
            },
            "spec": {"containers": [{"name": self.role, "image": "disagg-worker:0.1.0"}]},
            "status": {
                "phase": "Running",
                "podIP": self.ip,
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.text, content_type="text/plain")

    async def start_server(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.ip, self.port).start()

    async def stop_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class FakePods:
    """The pods of one test; addresses 127.0.0.2, 127.0.0.3, ... in creation order."""

    def __init__(self, cluster: kmock.KubernetesEmulator, port: int) -> None:
        self.cluster = cluster
        self.port = port
        self.pods: list[FakePod] = []

    async def add(
        self, role: str, queue_depth: int = 0, in_flight: int = 0, port: int | None = None
    ) -> FakePod:
        index = len(self.pods)
        pod = FakePod(f"{NAME}-{role}-{index}", role, f"127.0.0.{index + 2}", port or self.port)
        pod.load(queue_depth, in_flight)
        await pod.start_server()
        self.pods.append(pod)
        response = await self.cluster.post(PODS_PATH, json=pod.manifest())
        assert response.status == 200, await response.text()
        return pod

    async def close(self) -> None:
        for pod in self.pods:
            await pod.stop_server()


class Harness:
    """A resource in kmock with its children, and the autoscaler ticked by hand."""

    def __init__(self, cluster: kmock.KubernetesEmulator, kube: Kube) -> None:
        self.cluster = cluster
        self.kube = kube
        self.state: dict[str, Any] = {}

    async def create(self, spec: dict[str, Any]) -> None:
        """Create the resource and its children as one reconcile does."""
        await apply(self.cluster, custom_resource(spec))
        await reconcile_once(self.kube, live(self.cluster, CR_RESOURCE, NAME))

    async def tick(self, **kwargs: Any) -> None:
        await tick(
            kube=self.kube, body=live(self.cluster, CR_RESOURCE, NAME), state=self.state, **kwargs
        )

    def restart(self) -> None:
        """Forget the in-memory history, as a new operator process starts without it."""
        self.state = {}

    def status(self, role: str) -> dict[str, Any]:
        return (live(self.cluster, CR_RESOURCE, NAME).get("status") or {}).get(role) or {}


@contextlib.asynccontextmanager
async def harness(cluster: kmock.KubernetesEmulator):
    kube = Kube.from_environment()
    try:
        yield Harness(cluster, kube)
    finally:
        await asyncio.to_thread(kube.close)
