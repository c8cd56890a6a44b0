"""The RBAC list grants every request the operator and kopf make."""

from __future__ import annotations

import pytest
from disagg_operator import kube, rbac


def granted(rules: list[rbac.Rule], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if rule.api_group == group and rule.resource == resource:
            verbs.update(rule.verbs)
    return verbs


@pytest.mark.parametrize("cluster_wide", [True, False])
@pytest.mark.parametrize(
    "resource, verbs",
    [
        (kube.DEPLOYMENTS, {"get", "list", "watch", "create", "patch", "delete"}),
        (kube.SERVICES, {"get", "list", "watch", "create", "patch", "delete"}),
        (kube.PODDISRUPTIONBUDGETS, {"get", "list", "watch", "create", "patch", "delete"}),
        (kube.DISAGGREGATED_DEPLOYMENTS, {"get", "list", "watch", "patch"}),
        (kube.EVENTS, {"create"}),
        (kube.PODS, {"get", "list", "watch"}),
    ],
    ids=lambda value: getattr(value, "plural", None),
)
def test_kube_calls_are_granted(cluster_wide, resource, verbs):
    rules = rbac.rules_for(cluster_wide=cluster_wide, peering=False)

    assert verbs <= granted(rules, resource.group, resource.plural)


def test_status_patch_is_granted():
    rules = rbac.rules_for(cluster_wide=False, peering=False)

    assert "patch" in granted(rules, "disagg.dev", "disaggregateddeployments/status")


def test_peering_rule_follows_scope():
    cluster_wide = rbac.rules_for(cluster_wide=True, peering=True)
    namespaced = rbac.rules_for(cluster_wide=False, peering=True)

    assert "patch" in granted(cluster_wide, "kopf.dev", "clusterkopfpeerings")
    assert granted(cluster_wide, "kopf.dev", "kopfpeerings") == set()
    assert "patch" in granted(namespaced, "kopf.dev", "kopfpeerings")


def test_standalone_needs_no_peering():
    rules = rbac.rules_for(cluster_wide=True, peering=False)

    assert [rule for rule in rules if rule.api_group == "kopf.dev"] == []


def test_namespaced_operator_reads_namespaces():
    namespaced = rbac.rules_for(cluster_wide=False, peering=False)

    assert granted(namespaced, "", "namespaces") == {"get", "list", "watch"}


def test_policy_rules_render_rbac_shape():
    rendered = rbac.policy_rules(rbac.rules_for(cluster_wide=True, peering=True))

    assert {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": list(rbac.OWN),
    } in rendered
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in rendered)
