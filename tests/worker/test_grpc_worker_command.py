"""`disagg worker` rejects bad flags and unloadable models with one line and exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def run_worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "disagg_worker", "worker", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decode", "--max-queue", "0"], "invalid value 0: it must be at least 1"),
        (["decode", "--grpc-port", "70000"], "invalid port 70000"),
        (["decode", "--drain-timeout", "-1"], "invalid duration -1.0"),
        (["router-ish"], "invalid choice: 'router-ish'"),
    ],
)
def test_bad_flag_exits_2(args, message):
    result = run_worker(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_chunk_above_message_limit_exits_2():
    result = run_worker("prefill", "--kv-chunk-bytes", "1048576", "--max-message-bytes", "1048576")
    assert result.returncode == 2
    assert "invalid kv_chunk_bytes 1048576" in result.stderr


def test_missing_model_folder_exits_2(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_worker(
        "decode",
        "--model",
        str(missing),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    )
    assert result.returncode == 2
    assert f"disagg worker: error: cannot load model '{missing}'" in result.stderr
    # The model is checked before the metrics endpoint starts.
    assert "metrics endpoint" not in result.stderr


def test_error_line_carries_replica_prefix(tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [sys.executable, "-m", "disagg_worker", "worker", "decode", "--model", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DISAGG_LOG_PREFIX": "decode[0]"},
    )
    assert result.stderr.startswith("[decode[0]] disagg worker: error: cannot load model")


def test_grpc_port_in_use_exits_2(tiny_model_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_worker(
            "decode",
            "--model",
            str(tiny_model_dir),
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(port),
            "--metrics-port",
            "0",
        )
    assert result.returncode == 2
    assert f"cannot bind the gRPC server to 127.0.0.1:{port}" in result.stderr
