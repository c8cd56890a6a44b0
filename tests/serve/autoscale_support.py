"""Helpers for the autoscaling tests of `disagg serve`."""

from __future__ import annotations

import re
import select
import threading
import time


class StdoutLines:
    """Collect serve's stdout lines (the ready line is already consumed) in a thread."""

    def __init__(self, process) -> None:
        self.lines: list[str] = []
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            readable, _, _ = select.select([self._stream], [], [], 0.5)
            if not readable:
                continue
            line = self._stream.readline()
            if not line:
                return
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.2)
        return None
