"""The chart's RBAC grants exactly the API calls in disagg_operator.rbac, no more, no less.

Rules are compared as sets of (apiGroup, resource, verb) grants. For each
watch scope and peering setting, the rendered roles must grant every rule
that `rbac.rules_for` lists, and nothing else. Cluster-scoped rules must sit
in a ClusterRole, and a namespace-limited operator must get its namespaced
rules from a Role in each watched namespace, never cluster-wide.
"""

from __future__ import annotations

import pytest
from disagg_operator import rbac

Grant = tuple[str, str, str]

# (values, cluster_wide, peering) for each watch scope and peering setting.
SCOPES = {
    "cluster-wide-peering": ({}, True, True),
    "cluster-wide-standalone": ({"peering": {"enabled": False}}, True, False),
    "two-namespaces-peering": (
        {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]},
        False,
        True,
    ),
    "one-namespace-standalone": (
        {"clusterWide": False, "watchNamespaces": ["team-a"], "peering": {"enabled": False}},
        False,
        False,
    ),
}


def _grants_of_rules(rules) -> set[Grant]:
    """Expand rendered PolicyRules into single grants."""
    grants = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    grants.add((group, resource, verb))
    return grants


def _needed(cluster_wide: bool, peering: bool, *, cluster_scoped: bool | None = None) -> set[Grant]:
    grants = set()
    for rule in rbac.rules_for(cluster_wide=cluster_wide, peering=peering):
        if cluster_scoped is not None and rule.cluster_scoped != cluster_scoped:
            continue
        grants |= {(rule.api_group, rule.resource, verb) for verb in rule.verbs}
    return grants


def _bound_roles(rendered, binding_kind: str, role_kind: str) -> list[dict]:
    """Return the roles of `role_kind` that a `binding_kind` binds to the operator."""
    service_account = rendered.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    roles = []
    for binding in rendered.of_kind(binding_kind):
        subjects = binding["subjects"]
        assert subjects == [
            {"kind": "ServiceAccount", "name": service_account, "namespace": "disagg-system"}
        ]
        assert binding["roleRef"]["kind"] == role_kind
        namespace = binding["metadata"].get("namespace")
        matches = [
            role
            for role in rendered.of_kind(role_kind)
            if role["metadata"]["name"] == binding["roleRef"]["name"]
            and role["metadata"].get("namespace") == namespace
        ]
        assert len(matches) == 1, f"{binding_kind} {binding['metadata']['name']} binds no role"
        roles += matches
    return roles


def _cluster_grants(rendered) -> set[Grant]:
    grants = set()
    for role in _bound_roles(rendered, "ClusterRoleBinding", "ClusterRole"):
        grants |= _grants_of_rules(role["rules"])
    return grants


@pytest.mark.parametrize("scope", SCOPES)
def test_rbac_grants_every_needed_rule(render, scope):
    values, cluster_wide, peering = SCOPES[scope]
    rendered = render(values)
    cluster = _cluster_grants(rendered)

    assert _needed(cluster_wide, peering, cluster_scoped=True) <= cluster
    if cluster_wide:
        assert _needed(cluster_wide, peering, cluster_scoped=False) <= cluster
    for role in _bound_roles(rendered, "RoleBinding", "Role"):
        assert _needed(cluster_wide, peering, cluster_scoped=False) <= _grants_of_rules(
            role["rules"]
        ), role["metadata"]["namespace"]


@pytest.mark.parametrize("scope", SCOPES)
def test_rbac_grants_nothing_more(render, scope):
    values, cluster_wide, peering = SCOPES[scope]
    rendered = render(values)
    cluster = _cluster_grants(rendered)

    if cluster_wide:
        assert cluster - _needed(cluster_wide, peering) == set()
    else:
        assert cluster - _needed(cluster_wide, peering, cluster_scoped=True) == set()
    for role in _bound_roles(rendered, "RoleBinding", "Role"):
        extra = _grants_of_rules(role["rules"]) - _needed(
            cluster_wide, peering, cluster_scoped=False
        )
        assert extra == set(), role["metadata"]["namespace"]


@pytest.mark.parametrize("scope", ["two-namespaces-peering", "one-namespace-standalone"])
def test_namespaced_rbac_covers_each_namespace(render, scope):
    values, _, _ = SCOPES[scope]
    rendered = render(values)
    roles = _bound_roles(rendered, "RoleBinding", "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == values["watchNamespaces"]


def test_cluster_wide_rbac_has_no_roles(render):
    rendered = render()
    assert rendered.of_kind("Role") == []
    assert rendered.of_kind("RoleBinding") == []


def test_rbac_uses_no_wildcards(render):
    for values, _, _ in SCOPES.values():
        rendered = render(values)
        for role in rendered.of_kind("ClusterRole") + rendered.of_kind("Role"):
            for group, resource, verb in _grants_of_rules(role["rules"]):
                assert "*" not in (group, resource, verb), role["metadata"]["name"]


def test_rbac_off_renders_no_roles(render):
    rendered = render({"rbac": {"create": False}})
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert rendered.of_kind(kind) == [], kind
