"""`disagg bench calibrate` measures a real worker and writes a file the simulator loads."""

from __future__ import annotations

import json

from disagg_operator.simulate.calibration import load_calibration
from disagg_worker.cli import main


def test_calibrate_writes_loadable_file(tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "calibration.json"
    argv = ["bench", "calibrate", "--model", str(tiny_model_dir), "--output", str(output)]
    argv += ["--prefill-tokens", "64", "--kv-tokens", "32", "--steps", "2"]
    argv += ["--startup-repeats", "1", "--max-batch", "16"]

    code = main(argv)

    assert code == 0
    calibration = load_calibration(output)
    document = json.loads(output.read_text())
    assert [size for size, _ in calibration.decode_step_seconds] == [1, 2, 4, 8, 16, 32]
    assert all(seconds > 0 for _, seconds in calibration.decode_step_seconds)
    assert calibration.prefill_tokens_per_second > 0
    assert calibration.startup_seconds > 0
    assert calibration.max_batch_size == 16
    assert calibration.kv_bytes_per_token == 512
    assert document["command"].startswith("disagg bench calibrate --model ")
    assert "written to" in capsys.readouterr().out


def test_calibrate_prompt_over_context(tiny_model_dir, tmp_path, capsys):
    output = tmp_path / "calibration.json"
    argv = ["bench", "calibrate", "--model", str(tiny_model_dir), "--output", str(output)]

    code = main([*argv, "--prefill-tokens", "1000"])

    assert code == 2
    error = capsys.readouterr().err
    assert "--prefill-tokens 1000" in error
    assert "(256 tokens)" in error
    assert not output.exists()
