"""The example resources: valid against the CRD schema, its CEL rules and spec.validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from crd_support import EXAMPLE_PATHS, cel_violations, schema_errors
from disagg_operator import constants as c
from disagg_operator.builders import build_children
from disagg_operator.spec import load

KIND_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kind" / "kind-config.yaml"
EXAMPLES = {path.name: yaml.safe_load(path.read_text()) for path in EXAMPLE_PATHS}


def test_examples_present():
    assert {"cpu-kind.yaml", "gpu-split.yaml"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_kind_and_version(name):
    body = EXAMPLES[name]
    assert body["apiVersion"] == c.API_VERSION
    assert body["kind"] == c.KIND


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_matches_crd_schema(name):
    assert schema_errors(EXAMPLES[name]) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_passes_cel_rules(name):
    assert cel_violations(EXAMPLES[name]) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_passes_spec_validate(name):
    _, problems = load(EXAMPLES[name])
    assert [str(problem) for problem in problems] == []


def cpu_example_pods():
    body = {**EXAMPLES["cpu-kind.yaml"]}
    body["metadata"] = {**body["metadata"], "uid": "example-uid"}
    return {
        child["metadata"]["labels"][c.LABEL_ROLE]: child["spec"]["template"]["spec"]
        for child in build_children(body)
        if child["kind"] == "Deployment"
    }


def test_cpu_example_has_no_gpu_tolerations():
    assert [role for role, pod in cpu_example_pods().items() if "tolerations" in pod] == []


def test_cpu_example_pins_pools_to_kind_nodes():
    kind_config = yaml.safe_load(KIND_CONFIG.read_text())
    node_labels = [node["labels"] for node in kind_config["nodes"] if node["role"] == "worker"]
    pods = cpu_example_pods()
    selectors = [pods[role].get("nodeSelector") for role in (c.ROLE_PREFILL, c.ROLE_DECODE)]
    assert selectors == node_labels


def test_cpu_example_router_not_pinned():
    assert "nodeSelector" not in cpu_example_pods()[c.ROLE_ROUTER]


def test_gpu_example_places_pools_on_their_products():
    body = {**EXAMPLES["gpu-split.yaml"]}
    body["metadata"] = {**body["metadata"], "uid": "example-uid"}
    selectors = {
        child["metadata"]["labels"][c.LABEL_ROLE]: child["spec"]["template"]["spec"].get(
            "nodeSelector"
        )
        for child in build_children(body)
        if child["kind"] == "Deployment"
    }
    assert selectors["prefill"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert selectors["decode"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert selectors["router"] is None


def test_schema_check_can_fail():
    # A misspelt field in an example must not pass unnoticed.
    body = yaml.safe_load(EXAMPLE_PATHS[0].read_text())
    body["spec"]["decode"]["maxReplica"] = 3
    assert schema_errors(body) != []
