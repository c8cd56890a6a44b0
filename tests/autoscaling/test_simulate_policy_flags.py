"""`disagg simulate` flags for the load window, per-pool scale-down windows and step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from disagg_worker.cli import main
from disagg_worker.traces import synthetic_trace

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = REPO / "bench" / "calibration.json"


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    requests = synthetic_trace(200, seed=3, max_prompt_tokens=4000, max_output_tokens=600)
    lines = [
        json.dumps(
            {
                "timestamp": round(r.arrival_s * 1000),
                "input_length": r.prompt_tokens,
                "output_length": r.output_tokens,
            }
        )
        for r in requests.requests
    ]
    path = tmp_path / "synthetic.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(trace: Path, *flags: str) -> list[str]:
    argv = ["simulate", "--trace", str(trace), "--format", "mooncake"]
    argv += ["--calibration", str(CALIBRATION), "--token-scale", "0.05", "--policies", "builtin"]
    return [*argv, *flags]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--load-window", "-1"), "invalid --load-window -1"),
        (
            ("--prefill-scale-down-stabilization", "-15"),
            "invalid --prefill-scale-down-stabilization -15",
        ),
        (
            ("--decode-scale-down-stabilization", "-300"),
            "invalid --decode-scale-down-stabilization -300",
        ),
        (("--max-scale-down-step", "0"), "invalid --max-scale-down-step 0"),
    ],
    ids=["load window -1", "prefill window -15", "decode window -300", "scale-down step 0"],
)
def test_invalid_flag(trace, capsys, flags, message):
    code = main(simulate(trace, *flags))

    assert code == 2
    assert message in capsys.readouterr().err


def test_new_flags_run(trace, capsys):
    flags = ["--load-window", "60", "--prefill-scale-down-stabilization", "15"]
    flags += ["--decode-scale-down-stabilization", "300", "--max-scale-down-step", "1", "--json"]

    code = main(simulate(trace, *flags))

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert 0.0 <= report["builtin"]["slo_attainment"] <= 1.0
