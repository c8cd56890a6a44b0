"""Impossible values fail the render with a message naming the value and the fix.

Type and range errors come from values.schema.json; contradictions between
values come from templates/validate.yaml.
"""

from __future__ import annotations

import helm_python
import pytest

# (values, the reason the message must state, the fix it must name)
CONTRADICTIONS = {
    "two-replicas-without-peering": (
        {"replicas": 2, "peering": {"enabled": False}},
        "replicas is 2 but peering.enabled is false",
        "Set peering.enabled=true or replicas=1.",
    ),
    "namespaces-with-cluster-wide": (
        {"watchNamespaces": ["team-a"]},
        "watchNamespaces is [team-a] but clusterWide is true",
        "Set clusterWide=false to limit it to watchNamespaces, or empty watchNamespaces.",
    ),
    "namespaced-without-namespaces": (
        {"clusterWide": False},
        "clusterWide is false but watchNamespaces is empty",
        "List the namespaces in watchNamespaces, or set clusterWide=true.",
    ),
    "service-and-pod-monitor": (
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
        "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true",
        "Enable only one of them.",
    ),
    "timeout-2m-over-interval-30s": (
        {
            "metrics": {
                "serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "2m"}
            }
        },
        "metrics.serviceMonitor.scrapeTimeout (2m) is longer than metrics.serviceMonitor.interval",
        "Set scrapeTimeout to at most the interval.",
    ),
    "timeout-1500ms-over-interval-1s": (
        {"metrics": {"podMonitor": {"enabled": True, "interval": "1s", "scrapeTimeout": "1500ms"}}},
        "metrics.podMonitor.scrapeTimeout (1500ms) is longer than metrics.podMonitor.interval",
        "Set scrapeTimeout to at most the interval.",
    ),
    "no-service-account-name": (
        {"serviceAccount": {"create": False}},
        "serviceAccount.name is required when serviceAccount.create is false",
        "name an existing ServiceAccount",
    ),
}

SCHEMA_VIOLATIONS = {
    "negative-replicas": ({"replicas": -1}, "/replicas"),
    "unknown-pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "unknown-top-level-key": ({"replica": 2}, "'replica' not allowed"),
    "duration-in-words": (
        {"metrics": {"podMonitor": {"interval": "15 seconds"}}},
        "/metrics/podMonitor/interval",
    ),
    "namespace-not-dns-label": ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    "duplicate-namespace": (
        {"clusterWide": False, "watchNamespaces": ["team-a", "team-a"]},
        "/watchNamespaces",
    ),
    "liveness-port-zero": ({"operator": {"livenessPort": 0}}, "/operator/livenessPort"),
    "unknown-log-level": ({"operator": {"logLevel": "TRACE"}}, "/operator/logLevel"),
}


@pytest.mark.parametrize("case", CONTRADICTIONS)
def test_contradiction_fails_render(render, case):
    values, reason, fix = CONTRADICTIONS[case]
    with pytest.raises(helm_python.HelmRenderError) as caught:
        render(values)
    assert reason in str(caught.value)
    assert fix in str(caught.value)


@pytest.mark.parametrize("case", SCHEMA_VIOLATIONS)
def test_schema_violation_fails_render(render, case):
    values, location = SCHEMA_VIOLATIONS[case]
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render(values)
    assert location in str(caught.value)


def test_default_values_match_schema(chart):
    chart.validate_schema(chart.values)
