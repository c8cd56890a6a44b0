"""Benchmarks behind `disagg bench SUBCOMMAND`.

Each module exposes HELP (one line), `add_arguments(parser)` and
`run(args) -> int`, and imports torch and the model inside `run`, so
`disagg --help` stays fast. `disagg_worker.commands.bench` lists them.
"""
