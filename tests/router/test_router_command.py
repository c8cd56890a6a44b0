"""`disagg router` command line: replica-source checks and the served model name."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def router_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "disagg_worker", "router", *args]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass exactly one replica source"),
        (
            ("--decode-endpoints", "127.0.0.1:1", "--discover", "chat.team"),
            "got --decode-endpoints",
        ),
        (("--decode-endpoints", "nohost"), "--decode-endpoints: invalid address 'nohost'"),
        (("--prefill-endpoints", "127.0.0.1:1"), "--decode-endpoints is empty"),
        (("--discover", "chat"), "expected NAME.NAMESPACE"),
        (
            ("--decode-endpoints", "127.0.0.1:1", "--prefill-timeout", "0"),
            "invalid --prefill-timeout",
        ),
    ],
)
def test_bad_arguments_exit_2(args, message, capsys):
    from disagg_worker.cli import main

    assert main(["router", *args]) == 2
    assert message in capsys.readouterr().err


def test_served_model_name_listed():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        router_command(
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            "chat",
            "--decode-endpoints",
            "127.0.0.1:1",
        ),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.3)
        assert body is not None, "the router did not answer within 120 s"
        assert [model["id"] for model in body["data"]] == ["chat"]
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0
