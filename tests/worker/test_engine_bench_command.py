"""`disagg bench decode-batching` runs end to end and prints its figures as JSON."""

from __future__ import annotations

import json

import pytest
from disagg_worker.cli import main


def test_decode_batching_prints_json(tiny_model_dir, capsys):
    argv = [
        "bench",
        "decode-batching",
        "--model",
        str(tiny_model_dir),
        "--concurrency",
        "3",
        "--single-requests",
        "2",
        "--max-tokens",
        "4",
        "--min-prompt-tokens",
        "2",
        "--max-prompt-tokens",
        "9",
        "--json",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert figures["tokens_1"] == 2 * 3
    assert figures["tokens_3"] == 3 * 3
    assert figures["prompt_tokens"] == [2, 5, 9]
    assert figures["ratio"] > 0
    assert "concurrency 3" in captured.err


def test_decode_batching_rejects_swapped_prompt_bounds(tiny_model_dir, capsys):
    argv = ["bench", "decode-batching", "--model", str(tiny_model_dir)]
    assert main([*argv, "--min-prompt-tokens", "9", "--max-prompt-tokens", "2"]) == 2
    assert "swap them" in capsys.readouterr().err


def test_decode_batching_missing_model_fails_in_one_line(tmp_path, capsys):
    assert main(["bench", "decode-batching", "--model", str(tmp_path / "absent")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in error if "error:" in line]) == 1


@pytest.mark.parametrize("value", ["0", "-3"])
def test_decode_batching_rejects_bad_concurrency(value, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "decode-batching", "--concurrency", value])
    assert "at least 1" in capsys.readouterr().err


def test_decode_batching_rejects_one_max_token(tiny_model_dir, capsys):
    argv = ["bench", "decode-batching", "--model", str(tiny_model_dir), "--max-tokens", "1"]
    assert main(argv) == 2
    assert "at least 2" in capsys.readouterr().err
