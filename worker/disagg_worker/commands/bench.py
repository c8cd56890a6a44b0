"""`disagg bench BENCHMARK`: measurements recorded in docs/benchmarks.md.

Each BENCHMARK is a module in `disagg_worker.benchmarks` with HELP,
`add_arguments(parser)` and `run(args) -> int`; adding one is one line in
BENCHMARKS.
"""

from __future__ import annotations

import importlib

# Subcommand name -> module path, in help order.
BENCHMARKS = {
    "decode-batching": "disagg_worker.benchmarks.decode_batching",
    "interference": "disagg_worker.benchmarks.interference",
    "kv-transfer": "disagg_worker.benchmarks.kv_transfer",
    "calibrate": "disagg_worker.benchmarks.calibrate",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description=__doc__.splitlines()[0],
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, module_path in BENCHMARKS.items():
        module = importlib.import_module(module_path)
        benchmark = benchmarks.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(benchmark)
        benchmark.set_defaults(func=module.run)
