"""The operator runs with only what operator/Dockerfile installs: no torch, no gRPC.

The image installs the project wheel with --no-deps plus a pinned list of
packages. The test computes which installed distributions the image would
have (that list and what it requires, with pip and setuptools from the base
image), then runs the operator's entry points in a subprocess where importing
any other distribution's modules fails.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib

import dockerfile
import pytest
from chart_support import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

OPERATOR_DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
# Distributions the python base image already contains.
BASE_IMAGE_DISTRIBUTIONS = {"pip", "setuptools", "wheel"}

# Raises ModuleNotFoundError for the blocked top-level modules, then runs the
# code given as argv[2] with the JSON list of blocked names as argv[1].
BLOCKING_RUNNER = """
import importlib.abc, json, sys

BLOCKED = frozenset(json.loads(sys.argv[1]))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{fullname} is not installed in the operator image")
        return None


sys.meta_path.insert(0, Blocker())
exec(sys.argv[2])
"""


def _pinned_packages() -> list[str]:
    pins = []
    for instruction in dockerfile.parse_file(str(OPERATOR_DOCKERFILE)):
        if instruction.cmd == "RUN":
            pins += re.findall(r"([A-Za-z0-9_.-]+)==\d\S*", instruction.value[0])
    return pins


def _image_distributions() -> set[str]:
    """Return the canonical names of the pinned packages and everything they require."""
    found: set[str] = set()
    pending = [canonicalize_name(name) for name in _pinned_packages()]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(canonicalize_name(requirement.name))
    return found | BASE_IMAGE_DISTRIBUTIONS


def _blocked_modules() -> list[str]:
    """Return top-level modules of installed distributions that the image lacks."""
    allowed = _image_distributions() | {"disagg"}
    blocked = set()
    for module, distributions in importlib.metadata.packages_distributions().items():
        if not any(canonicalize_name(name) in allowed for name in distributions):
            blocked.add(module)
    # The project's own packages are in the image, installed from its wheel.
    return sorted(blocked - {"disagg_operator", "disagg_worker"})


def _run_without_image_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_RUNNER, json.dumps(_blocked_modules()), code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )


def test_image_pins_satisfy_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, project["dependencies"])
    }
    text = OPERATOR_DOCKERFILE.read_text()
    for name in _pinned_packages():
        pinned = re.search(rf"{re.escape(name)}==(\S+)", text).group(1)
        requirement = requirements.get(canonicalize_name(name))
        assert requirement is not None, f"{name} is pinned in the image but not a dependency"
        assert requirement.specifier.contains(pinned), f"{name}=={pinned} is outside {requirement}"


def test_blocker_blocks_torch():
    result = _run_without_image_extras("import torch")
    assert result.returncode != 0
    assert "torch is not installed in the operator image" in result.stderr


@pytest.mark.parametrize("module", ["grpc", "transformers", "numpy"])
def test_image_lacks_data_plane_module(module):
    assert module in _blocked_modules()


def test_cli_parser_builds_without_data_plane():
    result = _run_without_image_extras("from disagg_worker.cli import build_parser; build_parser()")
    assert result.returncode == 0, result.stderr


def test_operator_help_runs_without_data_plane():
    result = _run_without_image_extras(
        "from disagg_worker.cli import main; raise SystemExit(main(['operator', '--help']))"
    )
    assert result.returncode == 0, result.stderr
    assert "usage: disagg operator" in result.stdout


@pytest.mark.parametrize(
    "module",
    ["disagg_operator.handlers", "disagg_operator.autoscale", "disagg_operator.metrics_source"],
)
def test_operator_module_imports_without_data_plane(module):
    result = _run_without_image_extras(f"import {module}")
    assert result.returncode == 0, result.stderr
