"""Fixtures of the kind end-to-end tests: a kind cluster with the images and the chart.

Runs only with `pytest -m e2e tests/e2e` (or `make e2e`) where docker, kind,
kubectl and helm are on PATH and the Docker daemon responds to `docker info`.
Elsewhere every test is skipped with the reason. The session builds and loads the images
with the Makefile targets, installs the chart, and deletes the cluster at
the end unless DISAGG_E2E_KEEP_CLUSTER=1.

Environment:
- DISAGG_E2E_CLUSTER: kind cluster name (default disagg-e2e); an existing
  cluster of that name is reused and kept.
- DISAGG_E2E_SKIP_BUILD=1: use images already in the local Docker.
- DISAGG_E2E_KEEP_CLUSTER=1: keep a cluster this session created.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest
from e2e_support import HELM_NAMESPACE, HELM_RELEASE, REPO_ROOT, Kubectl, run

logger = logging.getLogger(__name__)

REQUIRED_TOOLS = ("docker", "kind", "kubectl", "helm")
CLUSTER_NAME = os.environ.get("DISAGG_E2E_CLUSTER", "disagg-e2e")

# Seconds for each setup step; image builds include the torch download.
DOCKER_INFO_TIMEOUT = 30
BUILD_TIMEOUT = 1800
CLUSTER_TIMEOUT = 600
LOAD_TIMEOUT = 900
INSTALL_TIMEOUT = 600


def missing_requirement() -> str | None:
    """Return why the end-to-end tests cannot run here, or None when they can."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not found on PATH; "
            f"the kind tests need {', '.join(REQUIRED_TOOLS)}"
        )
    try:
        subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            check=True,
            capture_output=True,
            timeout=DOCKER_INFO_TIMEOUT,
        )
    except subprocess.CalledProcessError as error:
        detail = error.stderr.decode(errors="replace").strip().splitlines()
        return f"the Docker daemon does not answer `docker info`: {detail[-1] if detail else error}"
    except subprocess.TimeoutExpired:
        return f"`docker info` timed out after {DOCKER_INFO_TIMEOUT} s"
    return None


def _make(*targets: str, timeout: float) -> None:
    run(
        [
            "make",
            "--no-print-directory",
            *targets,
            f"KIND_CLUSTER={CLUSTER_NAME}",
            f"HELM_RELEASE={HELM_RELEASE}",
            f"HELM_NAMESPACE={HELM_NAMESPACE}",
        ],
        timeout=timeout,
        cwd=REPO_ROOT,
    )


@pytest.fixture(scope="session")
def kind_cluster():
    """Start (or reuse) the kind cluster with the images loaded and the chart installed."""
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)

    existing = run(["kind", "get", "clusters"], timeout=60).stdout.split()
    created = CLUSTER_NAME not in existing
    if os.environ.get("DISAGG_E2E_SKIP_BUILD") != "1":
        _make("images", timeout=BUILD_TIMEOUT)
    _make("kind-up", timeout=CLUSTER_TIMEOUT)
    try:
        _make("kind-load", timeout=LOAD_TIMEOUT)
        _make("helm-install", timeout=INSTALL_TIMEOUT)
        yield Kubectl(context=f"kind-{CLUSTER_NAME}")
    finally:
        if created and os.environ.get("DISAGG_E2E_KEEP_CLUSTER") != "1":
            logger.info("deleting kind cluster=%s", CLUSTER_NAME)
            run(["kind", "delete", "cluster", "--name", CLUSTER_NAME], timeout=CLUSTER_TIMEOUT)
