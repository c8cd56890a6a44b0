"""Subprocess helpers of the kind end-to-end tests: kubectl, polling and port-forward."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Makefile's defaults; the operator Deployment is named after the release.
HELM_RELEASE = "disagg-operator"
HELM_NAMESPACE = "disagg-system"

T = TypeVar("T")


def run(
    command: list[str], *, timeout: float, cwd: Path | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output when it fails or times out."""
    logger.info("running command=%s", " ".join(command))
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"`{' '.join(command)}` timed out after {timeout} s") from error
    if result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def wait_for(
    check: Callable[[], T | None], *, timeout: float, interval: float, description: str
) -> T:
    """Call `check` every `interval` seconds until it returns a value other than None or False."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except AssertionError as error:
            # A failed kubectl call while objects start up counts as not ready yet.
            value, last_error = None, error
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            detail = f"; last error: {last_error}" if last_error else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {description}{detail}")
        time.sleep(interval)


class Kubectl:
    """kubectl bound to one kube context."""

    def __init__(self, context: str) -> None:
        self.context = context

    def __call__(self, *args: str, timeout: float = 60, input_text: str | None = None) -> str:
        command = ["kubectl", "--context", self.context, *args]
        return run(command, timeout=timeout, input_text=input_text).stdout

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self(*args, "-o", "json", timeout=timeout))

    def apply(self, manifest: dict[str, Any]) -> None:
        self("apply", "-f", "-", input_text=json.dumps(manifest))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, namespace: str, target: str, remote_port: int) -> Iterator[str]:
    """Forward a free port on 127.0.0.1 to `target` (e.g. svc/NAME) and yield its base URL."""
    local_port = free_port()
    command = [
        "kubectl",
        "--context",
        kubectl.context,
        "-n",
        namespace,
        "port-forward",
        "--address",
        "127.0.0.1",
        target,
        f"{local_port}:{remote_port}",
    ]
    logger.info("starting port-forward target=%s local_port=%d", target, local_port)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:

        def connected() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"kubectl port-forward exited: {process.stderr.read()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", local_port), timeout=1),
            ):
                return True
            return False

        wait_for(connected, timeout=60, interval=0.5, description=f"port-forward to {target}")
        yield f"http://127.0.0.1:{local_port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logger.info("stopped port-forward target=%s", target)
