"""Services and PodDisruptionBudgets of a DisaggregatedDeployment."""

from __future__ import annotations

import pytest
from crd_support import make_body
from disagg_operator.builders import build_children


def child(body, kind, name):
    for item in build_children(body):
        if item["kind"] == kind and item["metadata"]["name"] == name:
            return item
    raise AssertionError(f"no {kind} {name}")


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_worker_service_headless(role):
    spec = child(make_body(), "Service", f"demo-{role}")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is False
    assert spec["selector"] == {"app.kubernetes.io/instance": "demo", "disagg.dev/role": role}


@pytest.mark.parametrize(
    ("overrides", "grpc", "metrics"),
    [({}, 50051, 9090), ({"kvTransfer": {"port": 6000}, "metricsPort": 9100}, 6000, 9100)],
    ids=["default-50051-9090", "custom-6000-9100"],
)
def test_worker_service_ports(overrides, grpc, metrics):
    ports = child(make_body(**overrides), "Service", "demo-decode")["spec"]["ports"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [
        ("grpc", grpc, "grpc"),
        ("metrics", metrics, "metrics"),
    ]


@pytest.mark.parametrize(
    ("router", "service_type", "port"),
    [
        ({}, "ClusterIP", 8000),
        ({"serviceType": "LoadBalancer", "port": 80}, "LoadBalancer", 80),
        ({"serviceType": "NodePort"}, "NodePort", 8000),
    ],
    ids=["default-clusterip-8000", "loadbalancer-80", "nodeport-8000"],
)
def test_router_service(router, service_type, port):
    spec = child(make_body(router=router), "Service", "demo-router")["spec"]
    assert spec["type"] == service_type
    assert spec["ports"] == [
        {
            "name": "http",
            "port": port,
            "targetPort": "http",
            "protocol": "TCP",
            "appProtocol": "http",
        }
    ]
    assert spec["selector"] == {"app.kubernetes.io/instance": "demo", "disagg.dev/role": "router"}


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_pdb_per_worker_pool(role):
    spec = child(make_body(), "PodDisruptionBudget", f"demo-{role}")["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["selector"] == {
        "matchLabels": {"app.kubernetes.io/instance": "demo", "disagg.dev/role": role}
    }
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_no_pdb_for_router():
    kinds = {(c["kind"], c["metadata"]["name"]) for c in build_children(make_body())}
    assert ("PodDisruptionBudget", "demo-router") not in kinds
