"""GPU placement per pool: limits, the GPU toleration and the node selector."""

from __future__ import annotations

import pytest
from crd_support import make_body
from disagg_operator.builders import build_children

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEDICATED = {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}


def pod_spec(body, role):
    for child in build_children(body):
        if child["kind"] == "Deployment" and child["metadata"]["name"] == f"demo-{role}":
            return child["spec"]["template"]["spec"]
    raise AssertionError(f"no Deployment demo-{role}")


CASES = [
    # (case id, pool spec, expected GPU limit, nodeSelector, tolerations)
    ("cpu-pool-none", {}, None, None, None),
    (
        "cpu-pool-cpu-limits-none",
        {"resources": {"limits": {"cpu": "2", "memory": "2Gi"}}},
        None,
        None,
        None,
    ),
    (
        "gpu-1-default-selector",
        {"resources": {"limits": {"nvidia.com/gpu": 1}}},
        "1",
        {"nvidia.com/gpu.present": "true"},
        [GPU_TOLERATION],
    ),
    (
        "gpu-2-product-selector-overrides",
        {
            "resources": {"limits": {"nvidia.com/gpu": 2}},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        },
        "2",
        {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        [GPU_TOLERATION],
    ),
    (
        "gpu-1-empty-selector-overrides",
        {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": {}},
        "1",
        None,
        [GPU_TOLERATION],
    ),
    (
        "gpu-1-extra-toleration-appended",
        {"resources": {"limits": {"nvidia.com/gpu": 1}}, "tolerations": [DEDICATED]},
        "1",
        {"nvidia.com/gpu.present": "true"},
        [GPU_TOLERATION, DEDICATED],
    ),
    (
        "gpu-1-repeated-gpu-toleration-once",
        {"resources": {"limits": {"nvidia.com/gpu": 1}}, "tolerations": [GPU_TOLERATION]},
        "1",
        {"nvidia.com/gpu.present": "true"},
        [GPU_TOLERATION],
    ),
    (
        "cpu-pool-own-selector-and-toleration",
        {"nodeSelector": {"pool": "cpu"}, "tolerations": [DEDICATED]},
        None,
        {"pool": "cpu"},
        [DEDICATED],
    ),
]


@pytest.mark.parametrize(
    ("pool", "gpu_limit", "node_selector", "tolerations"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_pool_placement(role, pool, gpu_limit, node_selector, tolerations):
    spec = pod_spec(make_body(**{role: pool}), role)
    limits = spec["containers"][0]["resources"].get("limits", {})
    assert limits.get("nvidia.com/gpu") == gpu_limit
    assert spec.get("nodeSelector") == node_selector
    assert spec.get("tolerations") == tolerations


def test_gpu_prefill_cpu_decode_placed_apart():
    body = make_body(prefill={"resources": {"limits": {"nvidia.com/gpu": 1}}})
    assert "tolerations" in pod_spec(body, "prefill")
    assert "tolerations" not in pod_spec(body, "decode")
    assert "nodeSelector" not in pod_spec(body, "decode")


def test_router_never_gets_gpu_placement():
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    spec = pod_spec(make_body(prefill=gpu, decode=gpu), "router")
    assert "nodeSelector" not in spec
    assert "tolerations" not in spec
    assert spec["containers"][0]["resources"] == {}


def test_pool_requests_and_limits_passed_through():
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": 2, "memory": "2Gi"}}
    container = pod_spec(make_body(decode={"resources": resources}), "decode")["containers"][0]
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "2Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }
