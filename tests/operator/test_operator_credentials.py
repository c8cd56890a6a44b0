"""`disagg operator` without Kubernetes credentials: one line naming both sources, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from disagg_operator.kube import CredentialsError, load_api_client


def credentials_free_env(home, **extra: str) -> dict[str, str]:
    """The test's environment, outside any cluster, with HOME at an empty folder."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KUBERNETES_") and key != "KUBECONFIG"
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def run_operator(env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "disagg_worker", "operator", "-A", "--standalone"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def missing_kubeconfig_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return run_operator(credentials_free_env(home, KUBECONFIG=str(home / "missing")))


def test_missing_kubeconfig_exits_2(missing_kubeconfig_run):
    assert missing_kubeconfig_run.returncode == 2


def test_missing_kubeconfig_prints_one_line(missing_kubeconfig_run):
    assert len(missing_kubeconfig_run.stderr.splitlines()) == 1


def test_missing_kubeconfig_names_both_sources(missing_kubeconfig_run):
    line = missing_kubeconfig_run.stderr
    assert "in-cluster service account" in line
    assert "KUBECONFIG" in line


def test_missing_kubeconfig_names_file_and_fix(missing_kubeconfig_run):
    line = missing_kubeconfig_run.stderr
    assert "missing is not usable (file not found)" in line
    assert "set KUBECONFIG" in line


def test_missing_kubeconfig_prints_no_traceback(missing_kubeconfig_run):
    assert "Traceback" not in missing_kubeconfig_run.stdout + missing_kubeconfig_run.stderr


def test_default_kubeconfig_named_when_unset(tmp_path, monkeypatch):
    for key in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = re.escape(f"default kubeconfig {tmp_path}/.kube/config")
    with pytest.raises(CredentialsError, match=expected):
        load_api_client()


def test_unparsable_kubeconfig_named(tmp_path, monkeypatch):
    config = tmp_path / "kubeconfig"
    config.write_text("clusters: [\n")
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(CredentialsError, match=re.escape(f"KUBECONFIG {config} is not usable")):
        load_api_client()


def test_kubeconfig_without_context_named(tmp_path, monkeypatch):
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(config))
    with pytest.raises(CredentialsError, match="current-context"):
        load_api_client()
