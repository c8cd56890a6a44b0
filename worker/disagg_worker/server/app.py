"""Assembly of one worker replica's gRPC server, and its lifecycle.

`create_server(role, address, loaded)` builds the engines and services of a
role on a `grpc.aio` server bound to `address` and returns it with the bound
port, unstarted, so tests can bind port 0. `serve()` is the whole process
behind `disagg worker`: metrics endpoint, model load, gRPC server, and the
drain on SIGTERM.

Services per role:
- prefill: Prefill, Worker, grpc.health.v1.Health.
- decode and aggregated: Decode (remote KV or local prefill), KVTransfer,
  Worker, grpc.health.v1.Health. The two differ only in the role they report
  and label metrics with: an aggregated replica serves requests whole, a
  decode replica sits behind a prefill pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import signal
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from disagg_worker import kv as kv_cache
from disagg_worker import metrics as m
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.proto import worker_pb2_grpc
from disagg_worker.server import kv_transfer
from disagg_worker.server.common import PREFILL, ROLES, ReplicaState
from disagg_worker.server.decode_service import DecodeService
from disagg_worker.server.prefill_service import PrefillService
from disagg_worker.server.worker_service import WorkerService

logger = logging.getLogger(__name__)

# Seconds between two checks of the in-flight calls while draining.
_DRAIN_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class WorkerOptions:
    """Capacity, limits and timeouts of one replica (the `disagg worker` flags)."""

    # Requests admitted and waiting; one more is rejected with RESOURCE_EXHAUSTED.
    max_queue: int = 16
    # Requests decoded together in one batched forward (decode and aggregated).
    max_batch: int = 8
    # Bytes of received KV caches held until Decode.Generate claims them.
    kv_store_bytes: int = 2 << 30
    # Seconds an unclaimed KV cache is kept.
    kv_ttl_seconds: float = 60.0
    # Largest gRPC message either end accepts, in bytes.
    max_message_bytes: int = kv_transfer.DEFAULT_MAX_MESSAGE_BYTES
    # Payload bytes per KV chunk message sent by a prefill replica.
    kv_chunk_bytes: int = kv_transfer.DEFAULT_CHUNK_BYTES
    # Seconds a KV transfer may take before the prefill replica gives up.
    kv_transfer_timeout: float = kv_transfer.DEFAULT_TIMEOUT_SECONDS
    # Seconds SIGTERM waits for in-flight requests before stopping anyway.
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_batch", "kv_store_bytes", "max_message_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"invalid {name} {getattr(self, name)}: it must be at least 1")
        for name in ("kv_ttl_seconds", "kv_transfer_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"invalid {name} {getattr(self, name)}: it must be above 0")
        if self.drain_timeout < 0:
            raise ValueError(f"invalid drain_timeout {self.drain_timeout}: it must be at least 0")
        if self.kv_chunk_bytes + kv_transfer.CHUNK_OVERHEAD_BYTES > self.max_message_bytes:
            raise ValueError(
                f"invalid kv_chunk_bytes {self.kv_chunk_bytes}: with "
                f"{kv_transfer.CHUNK_OVERHEAD_BYTES} bytes of framing it exceeds "
                f"max_message_bytes {self.max_message_bytes}; lower it"
            )


class WorkerServer:
    """One replica's gRPC server with its engines, KV store and lifecycle."""

    def __init__(
        self,
        role: str,
        loaded,
        options: WorkerOptions,
        metrics: m.WorkerMetrics,
        state: ReplicaState,
    ) -> None:
        from disagg_worker.engine import DecodeEngine, PrefillEngine

        self.role = role
        self.loaded = loaded
        self.options = options
        self.metrics = metrics
        self.state = state
        self.port: int | None = None
        self.grpc_server = grpc.aio.server(
            options=[
                *kv_transfer.channel_options(options.max_message_bytes),
                # Two replicas must never share a port silently.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        worker_pb2_grpc.add_WorkerServicer_to_server(
            WorkerService(self.load_report), self.grpc_server
        )

        self.prefill_engine = None
        self.decode_engine = None
        self.sender: kv_transfer.KVSender | None = None
        self.store: kv_cache.KVStore | None = None
        self.kv_service: kv_transfer.KVTransferService | None = None
        if role == PREFILL:
            self.prefill_engine = PrefillEngine(loaded, max_queue=options.max_queue)
            self.sender = kv_transfer.KVSender(
                chunk_bytes=options.kv_chunk_bytes,
                max_message_bytes=options.max_message_bytes,
                timeout_seconds=options.kv_transfer_timeout,
            )
            service = PrefillService(self.prefill_engine, loaded, self.sender, metrics, state)
            worker_pb2_grpc.add_PrefillServicer_to_server(service, self.grpc_server)
            self.services = ("disagg.v1.Prefill",)
        else:
            self.decode_engine = DecodeEngine(
                loaded, max_queue=options.max_queue, max_batch=options.max_batch
            )
            self.store = kv_cache.KVStore(options.kv_store_bytes, options.kv_ttl_seconds)
            self.kv_service = kv_transfer.KVTransferService(
                self.store,
                kv_transfer.ExpectedLayout.of(loaded),
                metrics,
                is_draining=lambda: state.draining,
            )
            self.grpc_server.add_generic_rpc_handlers([self.kv_service.handler()])
            service = DecodeService(self.decode_engine, loaded, self.store, metrics, state)
            worker_pb2_grpc.add_DecodeServicer_to_server(service, self.grpc_server)
            self.services = ("disagg.v1.Decode", kv_transfer.SERVICE_NAME)
        self.services = (*self.services, "disagg.v1.Worker")

        engine = self.prefill_engine or self.decode_engine
        metrics.track_load(
            queue_depth=lambda: engine.queue_depth,
            inflight=lambda: engine.inflight,
            pending_kv_transfers=self._pending_kv_transfers,
            kv_store_bytes=(lambda: self.store.used_bytes) if self.store is not None else None,
        )
        metrics.set_model(loaded.name, loaded.fingerprint)

    def _pending_kv_transfers(self) -> int:
        # A prefill replica counts transfers it sent and awaits acknowledgement
        # of; a decode replica counts transfers it is still receiving.
        if self.sender is not None:
            return self.sender.pending
        return self.kv_service.receiving if self.kv_service is not None else 0

    def load_report(self) -> pb.GetLoadResponse:
        engine = self.prefill_engine or self.decode_engine
        return pb.GetLoadResponse(
            role=self.role,
            queue_depth=engine.queue_depth,
            inflight=engine.inflight,
            max_queue=self.options.max_queue,
            draining=self.state.draining,
            model_fingerprint=self.loaded.fingerprint,
            model_name=self.loaded.name,
            pending_kv_transfers=self._pending_kv_transfers(),
        )

    async def _set_health(self, status) -> None:
        for service in ("", *self.services):
            await self.health.set(service, status)

    async def start(self) -> None:
        """Start serving and report SERVING on grpc.health.v1."""
        await self.grpc_server.start()
        self.state.loaded = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, timeout: float) -> bool:
        """Stop admitting and wait up to `timeout` seconds for in-flight work to finish.

        Health turns NOT_SERVING and new Prefill, Generate and KV transfer
        calls get UNAVAILABLE; the server keeps serving health and GetLoad
        so routers see the drain. Returns False if work was still running at
        the deadline.
        """
        self.state.draining = True
        self.metrics.draining.set(1)
        await self.health.enter_graceful_shutdown()
        logger.info(
            "draining role=%s inflight_calls=%d timeout_s=%.1f",
            self.role,
            self.state.active_calls,
            timeout,
        )
        deadline = time.monotonic() + timeout
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        if self._busy():
            logger.warning(
                "drain timed out role=%s after %.1f s with %d calls still running; stopping anyway",
                self.role,
                timeout,
                self.state.active_calls,
            )
            return False
        logger.info("drained role=%s", self.role)
        return True

    def _busy(self) -> bool:
        return self.state.active_calls > 0 or self._pending_kv_transfers() > 0

    async def stop(self, grace: float | None = None) -> None:
        """Stop the gRPC server (cancelling calls left after `grace` seconds) and the engines."""
        self.state.draining = True
        await self.grpc_server.stop(grace)
        for engine in (self.prefill_engine, self.decode_engine):
            if engine is not None:
                await asyncio.to_thread(engine.close)
        if self.sender is not None:
            await self.sender.close()
        logger.info("stopped role=%s port=%s", self.role, self.port)


def create_server(
    role: str,
    address: str,
    loaded,
    options: WorkerOptions | None = None,
    *,
    metrics: m.WorkerMetrics | None = None,
    state: ReplicaState | None = None,
) -> tuple[WorkerServer, int]:
    """Build (unstarted) the replica of `role` bound to `address`; return it and the bound port."""
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}; use one of {', '.join(ROLES)}")
    options = options or WorkerOptions()
    metrics = metrics or m.WorkerMetrics(role)
    state = state or ReplicaState(role)
    server = WorkerServer(role, loaded, options, metrics, state)
    try:
        port = server.grpc_server.add_insecure_port(address)
    except RuntimeError as error:
        port = 0
        logger.error("binding the gRPC server failed address=%s: %s", address, error)
    if port == 0:
        for engine in (server.prefill_engine, server.decode_engine):
            if engine is not None:
                engine.close()
        raise OSError(
            f"cannot bind the gRPC server to {address}: the port is in use or the address "
            "is not local; choose another --grpc-port or --host"
        )
    server.port = port
    return server, port


async def serve(
    role: str,
    *,
    model: str,
    dtype: str | None,
    device: str,
    host: str,
    grpc_port: int,
    metrics_port: int,
    options: WorkerOptions,
    cache_dir: str | None = None,
    served_model_name: str | None = None,
    revision: str | None = None,
) -> None:
    """Run one replica until SIGTERM or SIGINT, then drain and stop.

    1. Serve /metrics and the probes (not ready yet).
    2. Load the model, then start gRPC and report SERVING.
    3. On a signal: drain (bounded by options.drain_timeout), stop, return.
    """
    from disagg_worker.metrics_http import MetricsHttpServer
    from disagg_worker.model import ModelLoadError, load_model

    metrics = m.WorkerMetrics(role)
    state = ReplicaState(role)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stop_requested)

    http = MetricsHttpServer(metrics.registry, ready=lambda: state.ready)
    bound_metrics_port = await http.start(host, metrics_port)
    server = None
    try:
        load_options = {"dtype": dtype, "device": device, "cache_dir": cache_dir}
        if revision is not None:
            if "revision" not in inspect.signature(load_model).parameters:
                raise ModelLoadError(
                    f"cannot load model {model!r} at revision {revision!r}: this build "
                    "cannot select revisions; omit --revision"
                )
            load_options["revision"] = revision
        loaded = await asyncio.to_thread(load_model, model, **load_options)
        if served_model_name:
            # The fingerprint stays that of the weights; only the reported name changes.
            loaded = dataclasses.replace(loaded, name=served_model_name)
        server, port = create_server(
            role, f"{host}:{grpc_port}", loaded, options, metrics=metrics, state=state
        )
        await server.start()
        logger.info(
            "started role=%s grpc_port=%d metrics_port=%d model=%s fingerprint=%s "
            "max_queue=%d max_batch=%d",
            role,
            port,
            bound_metrics_port,
            loaded.name,
            loaded.fingerprint,
            options.max_queue,
            options.max_batch,
        )
        await stop_requested.wait()
        drained = await server.drain(options.drain_timeout)
        # Calls still running after a timed-out drain are cancelled at once.
        await server.stop(grace=None if drained else 0)
    finally:
        if server is not None and not server.state.draining:
            await server.stop(grace=0)
        await http.stop()
        logger.info("worker exited role=%s", role)


def _on_signal(signum: int, stop_requested: asyncio.Event) -> None:
    logger.info("received %s; draining", signal.Signals(signum).name)
    stop_requested.set()
