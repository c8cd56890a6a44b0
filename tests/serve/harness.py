"""Run `disagg serve` as a real subprocess for tests, and inspect its children."""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

READY_PATTERN = re.compile(r"ready at (http://\S+)")


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


class ServeProcess:
    """A `disagg serve --port 0 ...` process; `url` is set once it printed its URL."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 420.0) -> None:
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "disagg_worker", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"disagg serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            readable, _, _ = select.select([self.process.stdout], [], [], 1.0)
            if not readable:
                continue
            match = READY_PATTERN.search(self.process.stdout.readline())
            if match:
                self.url = match.group(1)
                return
        self.stop()
        raise RuntimeError(f"disagg serve not ready after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 90.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def children(self) -> dict[int, str]:
        """pid -> command line of the processes serve started (its direct children)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            # The parent pid is the second field after the parenthesized name.
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid:
                found[int(entry.name)] = cmdline
        return found

    def worker_pids(self, role: str) -> list[int]:
        return sorted(pid for pid, cmd in self.children().items() if f" worker {role} " in cmd)

    def worker_metrics_port(self, pid: int) -> int:
        command = self.children()[pid].split()
        return int(command[command.index("--metrics-port") + 1])


def metric_value(url: str, name: str, **labels) -> float | None:
    """Return one sample of a Prometheus endpoint, or None when absent."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def wait_until(condition, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for this purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
