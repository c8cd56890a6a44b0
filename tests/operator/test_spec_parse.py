"""spec.parse_spec: defaults, typed values and errors that name the field."""

from __future__ import annotations

from decimal import Decimal

import pytest
from crd_support import make_body
from disagg_operator import constants as c
from disagg_operator.spec import SpecError, load, parse_spec, to_dict


def parse(**spec):
    return parse_spec(make_body(**spec)["spec"])


def test_parse_minimal_applies_defaults():
    spec = parse()
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.prefill.replicas == 1
    assert spec.decode.max_replicas == 4
    assert spec.router.port == 8000
    assert spec.kv_transfer.port == 50051
    assert spec.metrics_port == 9090
    assert spec.autoscaling.mode == "builtin"
    assert spec.autoscaling.max_total_gpus is None


def test_parse_scaling_options_default_off():
    spec = parse()
    assert spec.autoscaling.load_window_seconds == 0
    assert spec.autoscaling.max_scale_down_step_replicas is None
    assert spec.prefill.scale_down_stabilization_seconds is None
    assert spec.decode.target_in_flight is None


def test_parse_scaling_options():
    spec = parse(
        autoscaling={"loadWindowSeconds": 120, "maxScaleDownStepReplicas": 1},
        prefill={"targetInFlight": 1, "scaleDownStabilizationSeconds": 30},
        decode={"targetInFlight": 6.5, "scaleDownStabilizationSeconds": 600},
    )
    assert spec.autoscaling.load_window_seconds == 120
    assert spec.autoscaling.max_scale_down_step_replicas == 1
    assert spec.prefill.target_in_flight == 1.0
    assert spec.prefill.scale_down_stabilization_seconds == 30
    assert spec.decode.target_in_flight == 6.5
    assert spec.decode.scale_down_stabilization_seconds == 600


def test_parse_pools_know_their_role():
    spec = parse()
    assert spec.prefill.role == c.ROLE_PREFILL
    assert spec.decode.role == c.ROLE_DECODE
    assert spec.pool("decode") is spec.decode


def test_parse_pool_image_overrides_spec_image():
    spec = parse(prefill={"image": "disagg-worker:0.2.0"})
    assert spec.image_for(c.ROLE_PREFILL) == "disagg-worker:0.2.0"
    assert spec.image_for(c.ROLE_DECODE) == "disagg-worker:0.1.0"
    assert spec.image_for(c.ROLE_ROUTER) == "disagg-worker:0.1.0"


@pytest.mark.parametrize(
    ("limits", "gpus"),
    [({}, 0), ({"nvidia.com/gpu": 1}, 1), ({"nvidia.com/gpu": "2"}, 2), ({"cpu": "4"}, 0)],
    ids=["none-0", "int-1", "string-2", "cpu-only-0"],
)
def test_parse_gpu_count(limits, gpus):
    spec = parse(prefill={"resources": {"limits": limits}})
    assert spec.prefill.gpus_per_replica == gpus
    assert spec.prefill.is_gpu_pool == (gpus > 0)


def test_parse_quantities_kept_as_strings():
    spec = parse(decode={"resources": {"limits": {"cpu": 2, "memory": "4Gi"}}})
    assert dict(spec.decode.resources.limits) == {"cpu": "2", "memory": "4Gi"}
    assert spec.decode.resources.gpus() == Decimal(0)


def test_parse_node_selector_absent_vs_empty():
    assert parse().prefill.node_selector is None
    assert parse(prefill={"nodeSelector": {}}).prefill.node_selector == {}


def test_parse_round_trip_through_to_dict():
    body = make_body(
        prefill={"tolerations": [{"key": "dedicated", "operator": "Exists"}], "minReplicas": 0},
        decode={"env": [{"name": "A", "value": "1"}]},
        router={"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf"}}}]},
        imagePullSecrets=[{"name": "registry"}],
        autoscaling={"maxTotalGPUs": 4, "tolerance": 0.2},
    )
    spec = parse_spec(body["spec"])
    assert parse_spec(to_dict(spec)) == spec


def test_parse_accepts_whole_float_as_integer():
    assert parse(prefill={"replicas": 2.0, "maxReplicas": 3}).prefill.replicas == 2


def spec_with(**overrides):
    return {**make_body()["spec"], **overrides}


ERROR_CASES = [
    # (case id, raw spec, field named by the error, words in the message)
    ("spec-missing", None, "spec", "spec.model"),
    ("model-missing", {"image": "x:1"}, "spec.model", "required"),
    ("model-source-missing", spec_with(model={"name": "m"}), "spec.model.source", "required"),
    ("image-missing", {"model": {"name": "m", "source": "s"}}, "spec.image", "required"),
    ("unknown-top-field-prefil", spec_with(prefil={}), "spec.prefil", "unknown field"),
    (
        "unknown-pool-field-replica",
        spec_with(decode={"replica": 2}),
        "spec.decode.replica",
        "unknown field",
    ),
    (
        "replicas-string-two",
        spec_with(prefill={"replicas": "two"}),
        "spec.prefill.replicas",
        "integer",
    ),
    (
        "replicas-bool-true",
        spec_with(prefill={"replicas": True}),
        "spec.prefill.replicas",
        "integer",
    ),
    ("replicas-float-1.5", spec_with(decode={"replicas": 1.5}), "spec.decode.replicas", "integer"),
    ("image-number-42", spec_with(image=42), "spec.image", "string"),
    ("pool-list-not-object", spec_with(prefill=[1]), "spec.prefill", "object"),
    (
        "node-selector-bool-value",
        spec_with(prefill={"nodeSelector": {"a": True}}),
        "spec.prefill.nodeSelector.a",
        "quote",
    ),
    (
        "tolerations-not-list",
        spec_with(prefill={"tolerations": {"key": "a"}}),
        "spec.prefill.tolerations",
        "list",
    ),
    (
        "quantity-4x",
        spec_with(decode={"resources": {"limits": {"cpu": "4x"}}}),
        "spec.decode.resources.limits.cpu",
        "quantity",
    ),
    (
        "env-without-name",
        spec_with(decode={"env": [{"value": "1"}]}),
        "spec.decode.env[0].name",
        "required",
    ),
    (
        "router-env-without-name",
        spec_with(router={"env": [{"value": "1"}]}),
        "spec.router.env[0].name",
        "required",
    ),
    (
        "secret-without-name",
        spec_with(imagePullSecrets=[{}]),
        "spec.imagePullSecrets[0].name",
        "required",
    ),
    (
        "tolerance-string",
        spec_with(autoscaling={"tolerance": "10%"}),
        "spec.autoscaling.tolerance",
        "number",
    ),
    (
        "load-window-float-1.5",
        spec_with(autoscaling={"loadWindowSeconds": 1.5}),
        "spec.autoscaling.loadWindowSeconds",
        "integer",
    ),
    (
        "scale-down-step-string",
        spec_with(autoscaling={"maxScaleDownStepReplicas": "1"}),
        "spec.autoscaling.maxScaleDownStepReplicas",
        "integer",
    ),
    (
        "pool-scale-down-window-string",
        spec_with(prefill={"scaleDownStabilizationSeconds": "60s"}),
        "spec.prefill.scaleDownStabilizationSeconds",
        "integer",
    ),
    (
        "target-in-flight-bool",
        spec_with(decode={"targetInFlight": True}),
        "spec.decode.targetInFlight",
        "number",
    ),
]


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_parse_error_names_field(raw, field, words):
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert caught.value.field == field
    assert words in caught.value.message


def test_load_turns_parse_error_into_problem():
    body = make_body(prefill={"replicas": "two"})
    spec, problems = load(body)
    assert spec is None
    assert [problem.field for problem in problems] == ["spec.prefill.replicas"]


def test_load_valid_body_returns_spec():
    spec, problems = load(make_body())
    assert problems == []
    assert spec is not None
    assert spec.model.source == "smollm2"


def test_parse_router_env():
    (variable,) = parse(router={"env": [{"name": "HF_TOKEN", "value": "t"}]}).router.env
    assert (variable.name, variable.value) == ("HF_TOKEN", "t")
