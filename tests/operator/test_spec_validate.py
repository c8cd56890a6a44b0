"""spec.validate: the problems the schema cannot catch, each naming the field and the fix."""

from __future__ import annotations

import pytest
from crd_support import make_body
from disagg_operator.spec import SpecProblem, load, parse_spec, validate, validate_name

GPU1 = {"limits": {"nvidia.com/gpu": 1}}
GPU2 = {"limits": {"nvidia.com/gpu": 2}}
DIGEST = "sha256:" + "0123456789abcdef" * 4

VALID_CASES = [
    # (case id, spec overrides) that validate accepts
    ("defaults", {}),
    ("image-registry-port-path-tag", {"image": "registry.example.com:5000/team/disagg:0.1.0"}),
    ("image-digest", {"image": f"disagg-worker@{DIGEST}"}),
    ("image-tag-and-digest", {"image": f"ghcr.io/org/disagg:1.2@{DIGEST}"}),
    ("gpu-pool-default-selector", {"prefill": {"resources": GPU1}}),
    (
        "gpu-pool-present-true",
        {"prefill": {"resources": GPU1, "nodeSelector": {"nvidia.com/gpu.present": "true"}}},
    ),
    (
        "gpu-pool-count-2-needs-2",
        {"decode": {"resources": GPU2, "nodeSelector": {"nvidia.com/gpu.count": "2"}}},
    ),
    (
        "gpu-request-equals-limit-1",
        {"decode": {"resources": {**GPU1, "requests": {"nvidia.com/gpu": "1"}}}},
    ),
    (
        "cpu-request-1-limit-2",
        {"decode": {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}},
    ),
    (
        "cpu-request-500m-limit-1",
        {"decode": {"resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": 1}}}},
    ),
    (
        "budget-8-min-needs-2",
        {
            "prefill": {"resources": GPU1},
            "decode": {"resources": GPU1},
            "autoscaling": {"maxTotalGPUs": 8},
        },
    ),
    (
        "budget-2-min-needs-2",
        {
            "prefill": {"resources": GPU1},
            "decode": {"resources": GPU1},
            "autoscaling": {"maxTotalGPUs": 2},
        },
    ),
    (
        "budget-1-prefill-scales-to-0",
        {
            "prefill": {"resources": GPU1, "replicas": 0, "minReplicas": 0},
            "decode": {"resources": GPU1},
            "autoscaling": {"maxTotalGPUs": 1},
        },
    ),
    ("toleration-exists-no-key", {"prefill": {"tolerations": [{"operator": "Exists"}]}}),
    (
        "toleration-noexecute-seconds-300",
        {
            "prefill": {
                "tolerations": [
                    {
                        "key": "a",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                ]
            }
        },
    ),
    (
        "env-value-from-secret",
        {
            "decode": {
                "env": [
                    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
                ]
            }
        },
    ),
    ("prefill-min-0-max-1", {"prefill": {"replicas": 0, "minReplicas": 0, "maxReplicas": 1}}),
    (
        "load-window-120-step-down-1",
        {"autoscaling": {"loadWindowSeconds": 120, "maxScaleDownStepReplicas": 1}},
    ),
    ("pool-scale-down-window-0", {"prefill": {"scaleDownStabilizationSeconds": 0}}),
    ("target-in-flight-0.5", {"decode": {"targetInFlight": 0.5}}),
]

PROBLEM_CASES = [
    # (case id, spec overrides, field of the problem, words the message must contain)
    ("image-uppercase", {"image": "Disagg-Worker:0.1.0"}, "spec.image", "lowercase"),
    ("image-double-colon", {"image": "disagg:0.1:0.2"}, "spec.image", "invalid image reference"),
    ("image-short-digest", {"image": "disagg@sha256:abc"}, "spec.image", "invalid image reference"),
    ("image-empty-path", {"image": "registry//disagg"}, "spec.image", "invalid image reference"),
    ("image-space", {"image": "disagg worker"}, "spec.image", "invalid image reference"),
    (
        "image-uppercase-digest",
        {"image": "disagg@sha256:" + "A" * 64},
        "spec.image",
        "invalid digest",
    ),
    ("image-empty", {"image": ""}, "spec.image", "invalid image reference"),
    ("pool-image-invalid", {"decode": {"image": "UPPER:1"}}, "spec.decode.image", "e.g. registry"),
    (
        "gpu-present-false",
        {"prefill": {"resources": GPU1, "nodeSelector": {"nvidia.com/gpu.present": "false"}}},
        "spec.prefill.nodeSelector",
        "remove that selector key",
    ),
    (
        "gpu-count-1-needs-2",
        {"decode": {"resources": GPU2, "nodeSelector": {"nvidia.com/gpu.count": "1"}}},
        "spec.decode.nodeSelector",
        "fewer GPUs than the 2",
    ),
    (
        "gpu-limit-0.5",
        {"prefill": {"resources": {"limits": {"nvidia.com/gpu": "500m"}}}},
        "spec.prefill.resources.limits.nvidia.com/gpu",
        "whole number",
    ),
    (
        "gpu-request-without-limit",
        {"prefill": {"resources": {"requests": {"nvidia.com/gpu": 1}}}},
        "spec.prefill.resources.requests.nvidia.com/gpu",
        "needs a limit",
    ),
    (
        "gpu-request-2-limit-1",
        {"decode": {"resources": {**GPU1, "requests": {"nvidia.com/gpu": 2}}}},
        "spec.decode.resources.requests.nvidia.com/gpu",
        "set them equal",
    ),
    (
        "cpu-request-4-limit-2",
        {"decode": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}}},
        "spec.decode.resources.requests.cpu",
        "greater than the limit",
    ),
    (
        "memory-request-2Gi-limit-1Gi",
        {"router": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}},
        "spec.router.resources.requests.memory",
        "greater than the limit",
    ),
    (
        "toleration-equal-without-key",
        {"prefill": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
        "spec.prefill.tolerations[0].operator",
        "needs operator Exists",
    ),
    (
        "toleration-exists-with-value",
        {"decode": {"tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]}},
        "spec.decode.tolerations[0].value",
        "takes no value",
    ),
    (
        "toleration-seconds-noschedule",
        {
            "decode": {
                "tolerations": [
                    {
                        "key": "a",
                        "operator": "Exists",
                        "effect": "NoSchedule",
                        "tolerationSeconds": 5,
                    }
                ]
            }
        },
        "spec.decode.tolerations[0].tolerationSeconds",
        "NoExecute",
    ),
    (
        "toleration-effect-bogus",
        {"decode": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "Never"}]}},
        "spec.decode.tolerations[0].effect",
        "NoSchedule",
    ),
    (
        "toleration-seconds-negative",
        {
            "decode": {
                "tolerations": [
                    {
                        "key": "a",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": -1,
                    }
                ]
            }
        },
        "spec.decode.tolerations[0].tolerationSeconds",
        "at least 0",
    ),
    (
        "env-duplicate-name",
        {"decode": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.decode.env[1].name",
        "duplicate",
    ),
    (
        "router-env-duplicate-name",
        {"router": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.router.env[1].name",
        "duplicate",
    ),
    (
        "env-value-and-value-from",
        {
            "decode": {
                "env": [
                    {
                        "name": "A",
                        "value": "1",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                    }
                ]
            }
        },
        "spec.decode.env[0].valueFrom",
        "not both",
    ),
    (
        "budget-1-min-needs-2",
        {
            "prefill": {"resources": GPU1},
            "decode": {"resources": GPU1},
            "autoscaling": {"maxTotalGPUs": 1},
        },
        "spec.autoscaling.maxTotalGPUs",
        "minimum replicas need",
    ),
    (
        "budget-3-min-needs-4",
        {
            "prefill": {"resources": GPU2},
            "decode": {"resources": GPU2},
            "autoscaling": {"maxTotalGPUs": 3},
        },
        "spec.autoscaling.maxTotalGPUs",
        "the 4 that",
    ),
    (
        "budget-2-initial-needs-3",
        {
            "prefill": {"resources": GPU1, "replicas": 2},
            "decode": {"resources": GPU1},
            "autoscaling": {"maxTotalGPUs": 2},
        },
        "spec.autoscaling.maxTotalGPUs",
        "initial replicas",
    ),
    ("decode-min-0", {"decode": {"minReplicas": 0}}, "spec.decode.minReplicas", "at least 1"),
    (
        "prefill-min-3-max-2",
        {"prefill": {"minReplicas": 3, "maxReplicas": 2}},
        "spec.prefill.minReplicas",
        "raise maxReplicas",
    ),
    ("decode-replicas-7-max-4", {"decode": {"replicas": 7}}, "spec.decode.replicas", "within"),
    (
        "metrics-port-eq-kv-port-50051",
        {"metricsPort": 50051},
        "spec.metricsPort",
        "different ports",
    ),
    ("router-port-70000", {"router": {"port": 70000}}, "spec.router.port", "1 to 65535"),
    (
        "mode-auto",
        {"autoscaling": {"mode": "auto"}},
        "spec.autoscaling.mode",
        "builtin, external, off",
    ),
    (
        "load-window-3601",
        {"autoscaling": {"loadWindowSeconds": 3601}},
        "spec.autoscaling.loadWindowSeconds",
        "use 0 to 3600",
    ),
    (
        "scale-down-step-0",
        {"autoscaling": {"maxScaleDownStepReplicas": 0}},
        "spec.autoscaling.maxScaleDownStepReplicas",
        "use at least 1",
    ),
    (
        "pool-scale-down-window-minus-1",
        {"decode": {"scaleDownStabilizationSeconds": -1}},
        "spec.decode.scaleDownStabilizationSeconds",
        "use 0 to 3600",
    ),
    (
        "target-in-flight-0",
        {"prefill": {"targetInFlight": 0}},
        "spec.prefill.targetInFlight",
        "above 0",
    ),
    (
        "target-in-flight-minus-2",
        {"decode": {"targetInFlight": -2}},
        "spec.decode.targetInFlight",
        "above 0",
    ),
]


def problems_of(overrides):
    return validate(parse_spec(make_body(**overrides)["spec"]))


@pytest.mark.parametrize(
    "overrides", [case[1] for case in VALID_CASES], ids=[case[0] for case in VALID_CASES]
)
def test_validate_accepts(overrides):
    assert problems_of(overrides) == []


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [case[1:] for case in PROBLEM_CASES],
    ids=[case[0] for case in PROBLEM_CASES],
)
def test_validate_reports(overrides, field, words):
    problems = {problem.field: problem.message for problem in problems_of(overrides)}
    assert field in problems
    assert words in problems[field]


def test_validate_cpu_pool_ignores_gpu_selector():
    # A selector that rules out GPU nodes is fine for a pool without GPUs.
    overrides = {"prefill": {"nodeSelector": {"nvidia.com/gpu.present": "false"}}}
    assert problems_of(overrides) == []


def test_validate_reports_every_problem():
    overrides = {"image": "BAD", "decode": {"minReplicas": 0}, "router": {"port": 0}}
    fields = [problem.field for problem in problems_of(overrides)]
    assert sorted(fields) == ["spec.decode.minReplicas", "spec.image", "spec.router.port"]


def test_problem_str_names_field():
    assert str(SpecProblem("spec.image", "invalid")) == "spec.image: invalid"


@pytest.mark.parametrize(
    ("name", "count"),
    [("demo", 0), ("a" * 55, 0), ("a" * 56, 1), ("9lives", 1), ("has_underscore", 1), ("", 1)],
    ids=["demo", "55-chars", "56-chars", "leading-digit", "underscore", "empty"],
)
def test_validate_name(name, count):
    assert len(validate_name(name)) == count


def test_load_combines_name_and_spec_problems():
    _, problems = load(make_body(name="Bad", image="Also Bad"))
    assert [problem.field for problem in problems] == ["metadata.name", "spec.image"]
