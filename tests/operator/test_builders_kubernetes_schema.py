"""Every built child is a valid Kubernetes object (kubernetes-validate, strict)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from crd_support import EXAMPLE_PATHS, make_body
from disagg_operator.builders import build_children

KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]

BODIES = {
    "defaults": make_body(),
    "gpu-both-pools": make_body(
        prefill={
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule"}],
        },
        decode={
            "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "64Gi"}},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"},
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        },
        imagePullSecrets=[{"name": "registry"}],
        router={"serviceType": "LoadBalancer"},
    ),
    "prefill-scaled-to-0": make_body(prefill={"replicas": 0, "minReplicas": 0}),
}
for path in EXAMPLE_PATHS:
    example = yaml.safe_load(path.read_text())
    example["metadata"]["uid"] = "0b9f6c1e-uid"
    BODIES[f"example-{path.stem}"] = example

CHILDREN = [
    (f"{case}-{child['kind']}-{child['metadata']['name']}", child)
    for case, body in BODIES.items()
    for child in build_children(body)
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "child", [item[1] for item in CHILDREN], ids=[item[0] for item in CHILDREN]
)
def test_child_valid_for_kubernetes(child, version):
    kubernetes_validate.validate(child, version, strict=True)


def test_validator_rejects_unknown_field():
    # The check above can fail: strict mode rejects a misspelt field.
    deployment = next(c for c in build_children(make_body()) if c["kind"] == "Deployment")
    deployment["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
