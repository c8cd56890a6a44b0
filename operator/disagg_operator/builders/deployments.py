"""Deployments of the prefill pool, the decode pool and the router.

Replicas: the builders put spec replicas into the Deployment unless the
caller passes `replicas`. The apply layer, not the builders, decides who
owns the replica count. It sends spec replicas when it creates a Deployment
or when spec.autoscaling.mode is off. In builtin mode it sends the
autoscaler's desired replicas. In external mode (HPA, KEDA) it leaves the
live count alone, e.g. by dropping `spec.replicas` from the built manifest.
"""

from __future__ import annotations

from typing import Any

from .. import constants as c
from ..spec import DeploymentSpec
from .meta import Owner, object_meta, selector
from .pods import router_pod_template, worker_pod_template

# Old ReplicaSets kept for `kubectl rollout undo`.
_REVISION_HISTORY_LIMIT = 3


def build_worker_deployment(
    spec: DeploymentSpec, owner: Owner, role: str, replicas: int | None = None
) -> dict[str, Any]:
    """Return the Deployment NAME-ROLE of a worker pool (prefill or decode).

    `replicas` overrides spec.ROLE.replicas; see the module docstring.
    """
    if role not in c.WORKER_ROLES:
        raise ValueError(f"unknown worker role {role!r}: expected prefill or decode")
    pool_replicas = spec.pool(role).replicas if replicas is None else replicas
    template = worker_pod_template(spec, owner, role)
    return _deployment(owner, role, pool_replicas, template)


def build_router_deployment(
    spec: DeploymentSpec, owner: Owner, replicas: int | None = None
) -> dict[str, Any]:
    """Return the Deployment NAME-router; `replicas` overrides spec.router.replicas."""
    router_replicas = spec.router.replicas if replicas is None else replicas
    template = router_pod_template(spec, owner)
    return _deployment(owner, c.ROLE_ROUTER, router_replicas, template)


def _deployment(owner: Owner, role: str, replicas: int, template: dict[str, Any]) -> dict:
    if replicas < 0:
        raise ValueError(f"replicas of {c.child_name(owner.name, role)} is {replicas}; use >= 0")
    template_hash = template["metadata"]["annotations"][c.ANNOTATION_TEMPLATE_HASH]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(owner, role, {c.ANNOTATION_TEMPLATE_HASH: template_hash}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(owner, role)},
            # Start the new pod before stopping an old one, so a roll never
            # lowers serving capacity.
            # NOTE: on a GPU pool with no spare GPU the surge pod stays
            # Pending and the roll waits until a GPU frees up.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "revisionHistoryLimit": _REVISION_HISTORY_LIMIT,
            "template": template,
        },
    }
