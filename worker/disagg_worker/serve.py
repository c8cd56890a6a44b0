"""Local deployment behind `disagg serve`: worker pools and a router as processes.

`LocalDeployment` starts `disagg worker ROLE` subprocesses for each pool
and one `disagg router` subprocess, waits until all are healthy, then
supervises them. A process that exits unexpectedly is logged and restarted
after a back-off of 1 s that doubles up to 30 s and resets after a minute
of running.
`stop()` drains: SIGTERM to the router, then to the workers, a wait of up
to the drain timeout, then SIGKILL for what is left.

How the router learns the replicas: serve writes an endpoints file
(`{"prefill": [...], "decode": [...]}`, replaced atomically) that the
router rereads every second (`disagg router --endpoints-file`). That is
the actuator interface for scaling at runtime. `LocalPool.scale_to(n)`
starts replicas, or retires the highest-indexed ones in the background
(`disagg_worker.retire`). The file drops such a replica first, and serve
waits until the router lists it no more. Only then does serve send SIGTERM,
on which the worker finishes its in-flight requests and KV transfers and exits.

Every child runs in its own process group (so a terminal's Ctrl-C reaches
only serve, which then stops them in order) and gets PR_SET_PDEATHSIG, so
it dies with serve even when serve is killed with SIGKILL. Each child has
DISAGG_LOG_PREFIX set to "role[index]" (or "router"), which
disagg_worker.logs puts on every log line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from disagg_worker.logs import PREFIX_ENV
from disagg_worker.retire import RouterView, retire_replica
from disagg_worker.router.discovery import Endpoints, write_endpoints_file

logger = logging.getLogger(__name__)

# Restart back-off after an unexpected exit, in seconds.
RESTART_BACKOFF_INITIAL_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
# A process running this long without exiting has its back-off reset.
RESTART_BACKOFF_RESET_S = 60.0
# Seconds between two checks of the children.
SUPERVISE_INTERVAL_S = 0.5
# Seconds the router waits between two reads of the endpoints file.
ENDPOINTS_FILE_INTERVAL_S = 1.0

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGKILL when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port(host: str) -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def http_json(url: str, timeout_s: float = 1.0) -> dict | None:
    """Return the JSON object at `url`, whatever the status, or None when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
    except (urllib.error.URLError, OSError):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def disagg_command() -> list[str]:
    """Return the argv prefix that runs the `disagg` CLI of this installation."""
    return [sys.executable, "-m", "disagg_worker"]


class ManagedProcess:
    """One child process with its restart bookkeeping."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], health_url: str) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.health_url = health_url
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.backoff_s = RESTART_BACKOFF_INITIAL_S
        # Monotonic time of the next restart after an unexpected exit.
        self.restart_at: float | None = None
        # True once stop() was asked: an exit is expected, not restarted.
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        env = {**os.environ, **self.env, PREFIX_ENV: self.name}
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        logger.info("started replica=%s pid=%d", self.name, self.process.pid)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        return self.running() and http_ok(self.health_url)

    def supervise(self) -> None:
        """Restart the process after an unexpected exit, with back-off."""
        if self.stopping or self.process is None or self.running():
            if self.running() and time.monotonic() - self.started_at > RESTART_BACKOFF_RESET_S:
                self.backoff_s = RESTART_BACKOFF_INITIAL_S
            return
        now = time.monotonic()
        if self.restart_at is None:
            self.restart_at = now + self.backoff_s
            logger.warning(
                "replica exited replica=%s pid=%d returncode=%s; restarting in %.0f s",
                self.name,
                self.process.pid,
                self.process.returncode,
                self.backoff_s,
            )
            self.backoff_s = min(self.backoff_s * 2, RESTART_BACKOFF_MAX_S)
            return
        if now >= self.restart_at:
            self.restarts += 1
            logger.info("restarting replica=%s restarts=%d", self.name, self.restarts)
            self.start()

    def terminate(self) -> None:
        """Send SIGTERM (drain) to the process group, and expect the exit."""
        self.stopping = True
        if self.running():
            logger.info("stopping replica=%s pid=%d", self.name, self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, deadline: float) -> bool:
        """Wait until the process exits or the monotonic deadline passes."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.running():
            logger.warning(
                "killing replica=%s pid=%d: drain timed out", self.name, self.process.pid
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def stop_processes(processes: list[ManagedProcess], drain_timeout_s: float) -> None:
    """SIGTERM all, wait up to `drain_timeout_s` together, then SIGKILL the rest."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + drain_timeout_s
    for process in processes:
        if not process.wait(deadline):
            process.kill()


@dataclass
class WorkerReplica:
    role: str
    index: int
    grpc_port: int
    metrics_port: int
    process: ManagedProcess

    @property
    def name(self) -> str:
        return f"{self.role}[{self.index}]"


@dataclass
class PoolOptions:
    """Start-up settings shared by every replica of a pool."""

    model: str = "smollm2"
    host: str = "127.0.0.1"
    # torch intra-op threads per replica (OMP_NUM_THREADS); None leaves torch's default.
    threads: int | None = None
    drain_timeout_s: float = 30.0
    # Extra `disagg worker` arguments, e.g. ["--max-batch", "4"].
    worker_args: list[str] = field(default_factory=list)


class LocalPool:
    """The replicas of one role as local processes; `scale_to` is the actuator."""

    def __init__(
        self, role: str, options: PoolOptions, on_change=None, router: RouterView | None = None
    ) -> None:
        self.role = role
        self.options = options
        self.replicas: list[WorkerReplica] = []
        # Replicas out of the endpoints file that are draining, until they exit.
        self.leaving: list[WorkerReplica] = []
        # Called with no arguments after the set of replicas changed.
        self._on_change = on_change or (lambda: None)
        # Tells when the router no longer lists a replica; None skips that wait.
        self._router = router
        self._retirements: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return [f"{self.options.host}:{replica.grpc_port}" for replica in self.replicas]

    def _new_replica(self, index: int) -> WorkerReplica:
        host = self.options.host
        grpc_port, metrics_port = free_port(host), free_port(host)
        argv = [
            *disagg_command(),
            "worker",
            self.role,
            "--model",
            self.options.model,
            "--host",
            host,
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
            "--drain-timeout",
            str(self.options.drain_timeout_s),
            *self.options.worker_args,
        ]
        env = {}
        if self.options.threads:
            env = {
                "OMP_NUM_THREADS": str(self.options.threads),
                "MKL_NUM_THREADS": str(self.options.threads),
            }
        name = f"{self.role}[{index}]"
        health_url = f"http://{host}:{metrics_port}/health/ready"
        process = ManagedProcess(name, argv, env, health_url)
        return WorkerReplica(self.role, index, grpc_port, metrics_port, process)

    def _free_index(self) -> int:
        # A leaving replica keeps its index until it exits, so log names stay unique.
        taken = {replica.index for replica in (*self.replicas, *self.leaving)}
        return next(index for index in range(len(taken) + 1) if index not in taken)

    def scale_to(self, count: int) -> None:
        """Start replicas up to `count`, or retire the highest-indexed ones.

        Retiring runs in the background (see `disagg_worker.retire`) and the
        call returns at once; `wait_retired` waits for it.
        """
        if count < 0:
            raise ValueError(f"invalid replica count {count} for pool {self.role}: at least 0")
        with self._lock:
            started = []
            while len(self.replicas) < count:
                replica = self._new_replica(self._free_index())
                replica.process.start()
                self.replicas.append(replica)
                started.append(replica)
            if started:
                self._on_change()
                logger.info(
                    "scaling up pool=%s to=%d starting=%s",
                    self.role,
                    count,
                    [replica.name for replica in started],
                )
            if len(self.replicas) <= count:
                return
            self.replicas.sort(key=lambda replica: replica.index)
            leaving = self.replicas[count:]
            self.replicas = self.replicas[:count]
            self.leaving.extend(leaving)
            # The endpoints file drops the replicas before anything else happens to them.
            self._on_change()
        logger.info(
            "scaling down pool=%s to=%d leaving=%s", self.role, count, [r.name for r in leaving]
        )
        for replica in leaving:
            thread = threading.Thread(
                target=self._retire, args=(replica,), name=f"retire-{replica.name}", daemon=True
            )
            self._retirements.append(thread)
            thread.start()

    def _retire(self, replica: WorkerReplica) -> None:
        address = f"{self.options.host}:{replica.grpc_port}"
        try:
            retire_replica(
                replica.name,
                replica.process,
                address,
                f"http://{self.options.host}:{replica.metrics_port}/metrics",
                self._router,
                self.options.drain_timeout_s,
            )
        finally:
            with self._lock:
                self.leaving.remove(replica)

    def wait_retired(self, timeout_s: float) -> bool:
        """Wait until every retiring replica has exited; False if some still run at the deadline."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._retirements):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._retirements = [thread for thread in self._retirements if thread.is_alive()]
        return not self._retirements

    def supervise(self) -> None:
        with self._lock:
            replicas = list(self.replicas)
        for replica in replicas:
            replica.process.supervise()

    def processes(self) -> list[ManagedProcess]:
        """Return the processes of the serving and of the leaving replicas."""
        with self._lock:
            return [replica.process for replica in (*self.replicas, *self.leaving)]

    def ready_count(self) -> int:
        return sum(1 for replica in self.replicas if replica.process.healthy())


class StartupError(Exception):
    """A process of the deployment did not become healthy in time."""


class LocalDeployment:
    """Prefill and decode (or aggregated) pools plus a router, as local processes."""

    def __init__(
        self,
        options: PoolOptions,
        prefill_replicas: int = 1,
        decode_replicas: int = 1,
        aggregated_replicas: int = 0,
        port: int = 8000,
        router_args: list[str] | None = None,
    ) -> None:
        self.options = options
        self.port = port or free_port(options.host)
        self.router_args = router_args or []
        self.initial = {
            "prefill": prefill_replicas,
            "decode": decode_replicas,
            "aggregated": aggregated_replicas,
        }
        self.pools = {
            role: LocalPool(role, options, self.write_endpoints, self._router_view(role))
            for role in ("prefill", "decode", "aggregated")
        }
        self._state_dir = Path(tempfile.mkdtemp(prefix="disagg-serve-"))
        self.endpoints_file = self._state_dir / "endpoints.json"
        self.router: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    def endpoints(self) -> Endpoints:
        # Aggregated replicas serve Decode.Generate with the prompt, so the
        # router uses them as decode replicas with local prefill.
        return Endpoints(
            prefill=tuple(self.pools["prefill"].addresses),
            decode=tuple(self.pools["decode"].addresses + self.pools["aggregated"].addresses),
        )

    def write_endpoints(self) -> None:
        write_endpoints_file(self.endpoints_file, self.endpoints())

    def _router_view(self, role: str) -> RouterView:
        router_role = "decode" if role == "aggregated" else role
        return RouterView(
            f"{self.url}/metrics",
            router_role,
            lambda: len(getattr(self.endpoints(), router_role)),
        )

    def _all_processes(self) -> list[ManagedProcess]:
        workers = [process for pool in self.pools.values() for process in pool.processes()]
        return ([self.router] if self.router else []) + workers

    def start(self, timeout_s: float = 600.0) -> None:
        """Start every process and wait until all are healthy (StartupError otherwise)."""
        self.write_endpoints()
        for role, count in self.initial.items():
            self.pools[role].scale_to(count)
        router_argv = [
            *disagg_command(),
            "router",
            "--model",
            self.options.model,
            "--host",
            self.options.host,
            "--port",
            str(self.port),
            "--endpoints-file",
            str(self.endpoints_file),
            "--discovery-interval",
            str(ENDPOINTS_FILE_INTERVAL_S),
            *self.router_args,
        ]
        self.router = ManagedProcess("router", router_argv, {}, f"{self.url}/health")
        self.router.start()
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = self._all_processes()
        while pending:
            for process in pending:
                if process.process is not None and process.process.poll() is not None:
                    raise StartupError(
                        f"{process.name} exited with code {process.process.returncode} "
                        "during startup; see its log lines above"
                    )
            pending = [process for process in pending if not process.healthy()]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(process.name for process in pending)
                raise StartupError(f"not healthy after {timeout_s:.0f} s: {names}")
            time.sleep(0.5)
        # A healthy worker enters the router's rotation at the router's next
        # poll of it. Until then the router would prefill a long prompt locally.
        while not self.router_sees_all():
            if time.monotonic() > deadline:
                raise StartupError(
                    f"the router did not list every replica as ready after {timeout_s:.0f} s"
                )
            time.sleep(0.2)
        logger.info("deployment ready url=%s", self.url)

    def router_sees_all(self) -> bool:
        """True when the router's /health counts every listed replica as ready."""
        if self.router is None:
            return True
        health = http_json(f"{self.url}/health")
        if health is None:
            return False
        endpoints = self.endpoints()
        return health.get("prefill_ready", 0) >= len(endpoints.prefill) and health.get(
            "decode_ready", 0
        ) >= len(endpoints.decode)

    def supervise_once(self) -> None:
        if self.router is not None:
            self.router.supervise()
        for pool in self.pools.values():
            pool.supervise()

    def stop(self) -> None:
        """Drain and stop the router first, then every worker; kill what outlives the drain."""
        if self.router is not None:
            stop_processes([self.router], self.options.drain_timeout_s)
        workers = [process for pool in self.pools.values() for process in pool.processes()]
        stop_processes(workers, self.options.drain_timeout_s)
        # Replicas that were retiring have exited with the rest; let their threads finish.
        for pool in self.pools.values():
            pool.wait_retired(timeout_s=5.0)
        with contextlib.suppress(OSError):
            self.endpoints_file.unlink(missing_ok=True)
            self._state_dir.rmdir()
        logger.info("deployment stopped")
