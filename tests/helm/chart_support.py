"""Constants, value cases and the parsed render result shared by the chart tests.

The chart is rendered and linted with the Helm library of helm-python-sdk
(no helm binary, no cluster): `lookup` returns nothing and .Capabilities are
Helm's built-in defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "disagg-operator"
RELEASE_NAME = "disagg"
RELEASE_NAMESPACE = "disagg-system"


class RenderedChart:
    """The objects one render produced, with lookups by kind and name."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                self.notes = text
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.objects if item["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        matches = [
            item for item in self.of_kind(kind) if name is None or item["metadata"]["name"] == name
        ]
        assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
        return matches[0]

    @property
    def operator_container(self) -> dict[str, Any]:
        deployment = self.one("Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]


# Value combinations the chart must render, lint and validate; the ids name the case.
VALUE_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "three-replicas-with-peering": {"replicas": 3},
    "standalone-one-replica": {"peering": {"enabled": False}},
    "two-watched-namespaces": {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]},
    "watched-namespace-standalone": {
        "clusterWide": False,
        "watchNamespaces": ["team-a"],
        "peering": {"enabled": False},
    },
    "peering-object-not-created": {"peering": {"create": False, "name": "shared-peering"}},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}
    },
    "pod-monitor-two-namespaces": {
        "clusterWide": False,
        "watchNamespaces": ["team-a", "team-b"],
        "metrics": {"podMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "30s"}},
    },
    "dashboard-in-monitoring": {
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    },
    "existing-service-account-no-rbac": {
        "serviceAccount": {"create": False, "name": "platform-operator"},
        "rbac": {"create": False},
    },
    "customized-pod": {
        "fullnameOverride": "dd-operator",
        "image": {
            "repository": "registry.example.com/disagg-operator",
            "tag": "0.2.0",
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "operator": {
            "livenessPort": 8181,
            "logLevel": "DEBUG",
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
        },
        "podAnnotations": {"example.com/team": "ml"},
        "podLabels": {"team": "ml"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "priorityClassName": "system-cluster-critical",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                            ]
                        }
                    ]
                }
            }
        },
    },
}


def built_children() -> list[dict[str, Any]]:
    """Return the children the operator builds for examples/cpu-kind.yaml."""
    from disagg_operator.builders import build_children

    body = yaml.safe_load((REPO_ROOT / "examples" / "cpu-kind.yaml").read_text())
    body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
    return build_children(body)
