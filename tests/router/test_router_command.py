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


def test_revision_of_local_folder_exits_2(tiny_model_dir, capsys):
    from disagg_worker.cli import main

    args = ["--model", str(tiny_model_dir), "--revision", "main"]
    assert main(["router", *args, "--decode-endpoints", "127.0.0.1:1"]) == 2
    assert "revisions apply to Hugging Face model ids only" in capsys.readouterr().err


def test_revision_reaches_tokenizer_and_config(tiny_model_dir, monkeypatch):
    import transformers
    from disagg_worker.router.served_model import load_served_model

    # The hub id resolves to the local tiny model, so nothing is downloaded.
    hub_id = "example-org/tiny-llama"
    revisions = []
    for auto_class in (transformers.AutoTokenizer, transformers.AutoConfig):
        original = auto_class.from_pretrained

        def from_local(source, *args, _original=original, _name=auto_class.__name__, **kwargs):
            if source == hub_id:
                revisions.append((_name, kwargs.pop("revision", None)))
                source = tiny_model_dir
            return _original(source, *args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", from_local)
    served = load_served_model(hub_id, revision="v1.0")
    assert revisions == [("AutoTokenizer", "v1.0"), ("AutoConfig", "v1.0")]
    assert served.name == "tiny-llama"
