"""Subcommands of the `disagg` CLI.

Each module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments and returning an exit code.
Modules import heavy dependencies (torch, transformers, kopf) inside that
callable, so `disagg --help` stays fast.
"""
