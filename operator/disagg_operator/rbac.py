"""The single list of API permissions the operator needs, with the reason for each.

Read by the Helm chart's tests (the chart's Role and ClusterRole must grant at
least these) and by anyone writing RBAC by hand. The list covers the operator's
own requests: children, status, events and the pods the autoscaler reads
metrics from. It also covers what kopf itself needs: CRD discovery, namespace
observation, the watched resources, its annotations and finalizer on the custom
resource, and peering keep-alives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from . import constants as c

READ = ("get", "list", "watch")
OWN = ("get", "list", "watch", "create", "patch", "delete")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Verbs on one resource, and where the grant must live."""

    api_group: str
    resource: str
    verbs: tuple[str, ...]
    # Cluster-scoped resources need a ClusterRole even for a namespaced operator.
    cluster_scoped: bool
    purpose: str
    # None: always needed; True/False: only for a cluster-wide/namespaced operator.
    cluster_wide: bool | None = None
    # Only needed when kopf peering is on.
    peering_only: bool = False


RULES: tuple[Rule, ...] = (
    Rule(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        READ,
        cluster_scoped=True,
        purpose="kopf discovers the served resources and notices CRD changes",
    ),
    Rule(
        "",
        "namespaces",
        READ,
        cluster_scoped=True,
        cluster_wide=False,
        purpose="kopf follows the namespaces that match --namespace patterns",
    ),
    Rule(
        c.GROUP,
        c.PLURAL,
        ("get", "list", "watch", "patch"),
        cluster_scoped=False,
        purpose="kopf watches the resources and writes its annotations and finalizer",
    ),
    Rule(
        c.GROUP,
        f"{c.PLURAL}/status",
        ("get", "patch"),
        cluster_scoped=False,
        purpose="conditions and per-pool replica counts",
    ),
    Rule(
        "apps",
        "deployments",
        OWN,
        cluster_scoped=False,
        purpose="the prefill, decode and router Deployments, watched for drift and status; "
        "the builtin autoscaler patches their replicas",
    ),
    Rule(
        "",
        "services",
        OWN,
        cluster_scoped=False,
        purpose="the router Service and the headless worker Services",
    ),
    Rule(
        "policy",
        "poddisruptionbudgets",
        OWN,
        cluster_scoped=False,
        purpose="one PodDisruptionBudget per worker pool",
    ),
    Rule(
        "",
        "pods",
        READ,
        cluster_scoped=False,
        purpose="the builtin autoscaler finds the ready replicas whose /metrics it reads",
    ),
    Rule(
        "",
        "events",
        ("create",),
        cluster_scoped=False,
        purpose="events about created, updated and deleted children and about errors",
    ),
    Rule(
        "kopf.dev",
        "clusterkopfpeerings",
        ("get", "list", "watch", "patch"),
        cluster_scoped=True,
        cluster_wide=True,
        peering_only=True,
        purpose="keep-alives of a cluster-wide operator, so a standby replica takes over",
    ),
    Rule(
        "kopf.dev",
        "kopfpeerings",
        ("get", "list", "watch", "patch"),
        cluster_scoped=False,
        cluster_wide=False,
        peering_only=True,
        purpose="keep-alives of a namespaced operator, so a standby replica takes over",
    ),
)


def rules_for(*, cluster_wide: bool, peering: bool) -> list[Rule]:
    """Return the rules an operator started with these options needs."""
    return [
        rule
        for rule in RULES
        if (rule.cluster_wide is None or rule.cluster_wide == cluster_wide)
        and (peering or not rule.peering_only)
    ]


def policy_rules(rules: Iterable[Rule]) -> list[dict[str, Any]]:
    """Render rules as the `rules` of an RBAC Role or ClusterRole."""
    return [
        {"apiGroups": [rule.api_group], "resources": [rule.resource], "verbs": list(rule.verbs)}
        for rule in rules
    ]
