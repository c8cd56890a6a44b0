"""Entry point of the `disagg` command: dispatches to the subcommand modules."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from disagg_worker import __version__
from disagg_worker.logs import PREFIX_ENV

# Subcommand modules in help order; each exposes `register(subparsers)`.
COMMAND_MODULES = (
    "disagg_worker.commands.router",
    "disagg_worker.commands.serve",
    "disagg_worker.commands.replay",
    "disagg_worker.commands.simulate",
    "disagg_worker.commands.worker",
    "disagg_worker.commands.bench",
    "disagg_operator.commands_operator",
)


class CommandError(Exception):
    """A failure reported to the user as one line, with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disagg",
        description="Disaggregated LLM serving: prefill and decode pools on Kubernetes or locally.",
    )
    parser.add_argument("--version", action="version", version=f"disagg {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        # Under `disagg serve` the line names the replica, as its log lines do.
        prefix = os.environ.get(PREFIX_ENV)
        replica = f"[{prefix}] " if prefix else ""
        print(f"{replica}disagg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
