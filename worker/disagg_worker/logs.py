"""Logging set-up shared by every `disagg` process.

`disagg serve` starts each replica with DISAGG_LOG_PREFIX set to
"role[index]", so the merged output of all processes names the replica that
wrote each line.
"""

from __future__ import annotations

import json
import logging
import os
import sys

PREFIX_ENV = "DISAGG_LOG_PREFIX"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        prefix = os.environ.get(PREFIX_ENV)
        if prefix:
            entry["replica"] = prefix
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", log_format: str = "plain") -> None:
    """Send log records to stderr, as plain text or one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        prefix = os.environ.get(PREFIX_ENV)
        replica = f"[{prefix}] " if prefix else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {replica}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
