"""Services: the router's HTTP Service and the headless Services of the worker pools.

The router discovers worker pods through the headless Services' DNS
records, which list only ready pods (publishNotReadyAddresses is false).
"""

from __future__ import annotations

from typing import Any

from .. import constants as c
from ..spec import DeploymentSpec
from .meta import Owner, object_meta, selector


def router_endpoint(name: str, namespace: str, port: int) -> str:
    """Return the in-cluster URL of a deployment's API, as written to status.endpoint."""
    return f"http://{c.router_name(name)}.{namespace}.svc:{port}"


def build_router_service(spec: DeploymentSpec, owner: Owner) -> dict[str, Any]:
    """Return the Service NAME-router (type spec.router.serviceType) on the HTTP port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, c.ROLE_ROUTER),
        "spec": {
            "type": spec.router.service_type,
            "selector": selector(owner, c.ROLE_ROUTER),
            "ports": [
                {
                    "name": c.PORT_NAME_HTTP,
                    "port": spec.router.port,
                    "targetPort": c.PORT_NAME_HTTP,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def build_worker_service(spec: DeploymentSpec, owner: Owner, role: str) -> dict[str, Any]:
    """Return the headless Service NAME-ROLE of a worker pool: gRPC and metrics ports."""
    if role not in c.WORKER_ROLES:
        raise ValueError(f"unknown worker role {role!r}: expected prefill or decode")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, role),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": selector(owner, role),
            "ports": [
                {
                    "name": c.PORT_NAME_GRPC,
                    "port": spec.kv_transfer.port,
                    "targetPort": c.PORT_NAME_GRPC,
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
                {
                    "name": c.PORT_NAME_METRICS,
                    "port": spec.metrics_port,
                    "targetPort": c.PORT_NAME_METRICS,
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
            ],
        },
    }
