"""`disagg bench` arguments: names and defaults."""

from __future__ import annotations

import pytest
from disagg_worker.cli import build_parser, main


def test_interference_plot_off_by_default():
    args = build_parser().parse_args(["bench", "interference"])

    assert args.plot is None


def test_bench_help_names_benchmark(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])

    out = capsys.readouterr().out
    assert "disagg bench BENCHMARK" in out
    assert "SUBCOMMAND" not in out
