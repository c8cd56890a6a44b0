"""`disagg simulate` scales a trace the way `disagg replay` does."""

from __future__ import annotations

import argparse

import pytest
from disagg_operator.simulate import POLICY_NAMES
from disagg_worker.cli import build_parser, main
from disagg_worker.commands.simulate import scale_trace
from disagg_worker.replay.workload import plan_requests
from disagg_worker.traces import Trace, TraceRequest

REQUESTS = [TraceRequest(0.0, 100, 10), TraceRequest(2.0, 40, 4), TraceRequest(6.0, 8, 2)]


def test_time_scale_divides_arrival_gaps():
    scaled = scale_trace(REQUESTS, time_scale=2.0, token_scale=1.0)

    assert [r.arrival_s for r in scaled] == [0.0, 1.0, 3.0]


def test_time_scale_matches_replay():
    scaled = scale_trace(REQUESTS, time_scale=4.0, token_scale=1.0)
    planned = plan_requests(Trace(REQUESTS), time_scale=4.0, token_scale=1.0)

    assert [r.arrival_s for r in scaled] == [p.send_at_s for p in planned]


def test_token_scale_below_one_keeps_one_token():
    scaled = scale_trace(REQUESTS, time_scale=1.0, token_scale=0.25)

    assert [(r.prompt_tokens, r.output_tokens) for r in scaled] == [(25, 2), (10, 1), (2, 1)]


def test_token_scale_zero_is_rejected(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,374,44\n")

    code = main(["simulate", "--trace", str(trace), "--token-scale", "0"])

    assert code == 2
    assert "invalid --token-scale 0" in capsys.readouterr().err


def simulate_help(flag: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    simulate = subparsers.choices["simulate"]
    return next(a.help for a in simulate._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--max-step", "--target-queue-depth", "--time-scale"])
def test_help_names_default(flag):
    assert "(default " in simulate_help(flag)


def test_policies_help_lists_names():
    assert all(name in simulate_help("--policies") for name in POLICY_NAMES)
