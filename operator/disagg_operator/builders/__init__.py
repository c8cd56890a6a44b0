"""Pure builders of the children of a DisaggregatedDeployment.

Each function takes a parsed spec and the owner's identity and returns a
plain dict manifest; nothing here talks to the API server. The apply layer
calls `build_children` (or the per-kind builders) and owns every decision
about what to send, notably who sets `spec.replicas` (see deployments.py).
Equal inputs give byte-identical output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import constants as c
from ..spec import parse_spec
from .deployments import build_router_deployment, build_worker_deployment
from .meta import Owner, labels, owner_reference, selector, template_hash
from .pdb import build_pdb
from .pods import router_args, router_pod_template, worker_args, worker_pod_template
from .services import build_router_service, build_worker_service, router_endpoint

__all__ = [
    "Owner",
    "build_children",
    "build_pdb",
    "build_router_deployment",
    "build_router_service",
    "build_worker_deployment",
    "build_worker_service",
    "labels",
    "owner_reference",
    "router_args",
    "router_endpoint",
    "router_pod_template",
    "selector",
    "template_hash",
    "worker_args",
    "worker_pod_template",
]


def build_children(
    body: Mapping[str, Any], replicas: Mapping[str, int | None] | None = None
) -> list[dict[str, Any]]:
    """Build every child of a DisaggregatedDeployment body, in creation order.

    Order: per worker pool (prefill, then decode) its headless Service,
    Deployment and PodDisruptionBudget; then the router Deployment and
    Service. `replicas` maps a role to a replica override (None: the spec's).
    Raises SpecError for a spec that cannot be parsed, and ValueError for a
    body without name, namespace or uid. Call `spec.load` first to report
    invalid specs without building.
    """
    spec = parse_spec(body.get("spec"))
    owner = Owner.from_body(body)
    overrides = dict(replicas or {})
    unknown = sorted(set(overrides) - set(c.ROLES))
    if unknown:
        raise ValueError(f"replicas for unknown role {unknown[0]!r}: use {', '.join(c.ROLES)}")

    children: list[dict[str, Any]] = []
    for role in c.WORKER_ROLES:
        children.append(build_worker_service(spec, owner, role))
        children.append(build_worker_deployment(spec, owner, role, overrides.get(role)))
        children.append(build_pdb(owner, role))
    children.append(build_router_deployment(spec, owner, overrides.get(c.ROLE_ROUTER)))
    children.append(build_router_service(spec, owner))
    return children
