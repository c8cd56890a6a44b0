"""The external-autoscaling examples: valid objects that scale the example's worker pools."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from disagg_operator import constants as c

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RESOURCE = yaml.safe_load((EXAMPLES / "external-autoscaling.yaml").read_text())
HPAS = [
    doc
    for doc in yaml.safe_load_all((EXAMPLES / "external-autoscaling/hpa.yaml").read_text())
    if doc
]
SCALED_OBJECTS = [
    doc
    for doc in yaml.safe_load_all((EXAMPLES / "external-autoscaling/keda.yaml").read_text())
    if doc
]


def pool_of(target_name: str) -> tuple[str, dict]:
    """Return the role and pool spec of the example whose worker Deployment is `target_name`."""
    name = RESOURCE["metadata"]["name"]
    for role in c.WORKER_ROLES:
        if target_name == c.child_name(name, role):
            return role, RESOURCE["spec"][role]
    raise AssertionError(f"{target_name} is not a worker Deployment of {name}")


def test_resource_uses_external_mode():
    assert RESOURCE["spec"]["autoscaling"]["mode"] == c.AUTOSCALING_EXTERNAL


def test_one_hpa_and_scaled_object_per_pool():
    assert sorted(pool_of(hpa["spec"]["scaleTargetRef"]["name"])[0] for hpa in HPAS) == sorted(
        c.WORKER_ROLES
    )
    assert sorted(
        pool_of(scaled["spec"]["scaleTargetRef"]["name"])[0] for scaled in SCALED_OBJECTS
    ) == sorted(c.WORKER_ROLES)


@pytest.mark.parametrize("index", range(len(HPAS)))
def test_hpa_matches_kubernetes_schema(index):
    kubernetes_validate.validate(HPAS[index], "1.30", strict=True)


@pytest.mark.parametrize("index", range(len(HPAS)))
def test_hpa_targets_queue_depth_per_replica(index):
    hpa = HPAS[index]
    _, pool = pool_of(hpa["spec"]["scaleTargetRef"]["name"])
    (metric,) = hpa["spec"]["metrics"]

    assert hpa["metadata"]["namespace"] == RESOURCE["metadata"]["namespace"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "disagg_queue_depth"
    assert metric["pods"]["target"]["averageValue"] == str(pool["targetQueueDepth"])
    assert hpa["spec"]["minReplicas"] == pool["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == pool["maxReplicas"]


@pytest.mark.parametrize("index", range(len(SCALED_OBJECTS)))
def test_scaled_object_queries_its_pool(index):
    scaled = SCALED_OBJECTS[index]
    role, pool = pool_of(scaled["spec"]["scaleTargetRef"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["kind"] == "ScaledObject"
    assert scaled["metadata"]["namespace"] == RESOURCE["metadata"]["namespace"]
    assert trigger["type"] == "prometheus"
    assert query.startswith("sum(disagg_queue_depth{")
    assert f'disagg_dev_role="{role}"' in query
    assert f'disagg_dev_deployment="{RESOURCE["metadata"]["name"]}"' in query
    assert trigger["metadata"]["threshold"] == str(pool["targetQueueDepth"])
    assert scaled["spec"]["minReplicaCount"] == pool["minReplicas"]
    assert scaled["spec"]["maxReplicaCount"] == pool["maxReplicas"]
