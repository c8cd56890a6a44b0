"""`disagg operator` rejects incomplete options and maps valid ones onto kopf.run."""

from __future__ import annotations

import kopf
import pytest
from disagg_operator.commands_operator import check_args
from disagg_operator.kube import Kube
from disagg_worker.cli import CommandError, build_parser, main


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    """A kubeconfig for a server that is never contacted; the command only reads the file."""
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        "clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:6443\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n"
        "users:\n- name: test\n  user: {}\n"
    )
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(config))


def run_with(monkeypatch, argv: list[str]) -> dict:
    """Run `disagg operator ARGV` with kopf.run replaced by a recorder; return its kwargs."""
    calls: list[dict] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    assert main(["operator", *argv]) == 0
    assert len(calls) == 1
    return calls[0]


def test_missing_scope_is_rejected(capsys):
    assert main(["operator"]) == 2
    assert "--all-namespaces" in capsys.readouterr().err


def test_scope_options_are_exclusive():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-n", "a", "--all-namespaces"])


def test_liveness_port_out_of_range(capsys):
    assert main(["operator", "-A", "--liveness-port", "70000"]) == 2
    assert "--liveness-port 70000" in capsys.readouterr().err


def test_zero_resync_is_rejected(capsys):
    assert main(["operator", "-A", "--resync-seconds", "0"]) == 2
    assert "--resync-seconds" in capsys.readouterr().err


def test_empty_namespace_is_rejected():
    with pytest.raises(CommandError):
        check_args(build_parser().parse_args(["operator", "-n", " "]))


def test_namespaces_map_to_kopf(monkeypatch, kubeconfig):
    kwargs = run_with(monkeypatch, ["-n", "a", "-n", "b", "--standalone"])

    assert kwargs["namespaces"] == ["a", "b"]
    assert kwargs["clusterwide"] is False
    assert kwargs["standalone"] is True
    assert kwargs["peering_name"] is None


def test_peering_gets_random_priority(monkeypatch, kubeconfig):
    kwargs = run_with(monkeypatch, ["-A", "--liveness-port", "8080"])

    assert kwargs["clusterwide"] is True
    assert kwargs["peering_name"] == "disagg-operator"
    assert kwargs["priority"] >= 1
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:8080/healthz"


def test_explicit_priority_and_liveness_url(monkeypatch, kubeconfig):
    kwargs = run_with(
        monkeypatch,
        ["-A", "--peering", "ops", "--priority", "7", "--liveness", "http://0.0.0.0:9/healthz"],
    )

    assert kwargs["peering_name"] == "ops"
    assert kwargs["priority"] == 7
    assert kwargs["liveness_endpoint"] == "http://0.0.0.0:9/healthz"


def test_kopf_gets_the_checked_client(monkeypatch, kubeconfig):
    kwargs = run_with(monkeypatch, ["-A", "--standalone"])
    assert isinstance(kwargs["memo"].kube, Kube)
