"""policy_inputs maps a parsed spec to the scaling policy's pool configs and settings."""

from __future__ import annotations

import copy

from disagg_operator.autoscale import is_ready, policy_inputs
from disagg_operator.spec import parse_spec
from runtime_support import SPEC


def test_pool_fields_map_to_pool_config():
    spec = copy.deepcopy(SPEC)
    spec["prefill"].update(
        {"minReplicas": 0, "maxReplicas": 6, "targetQueueDepth": 3},
    )
    spec["prefill"]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}

    configs, _ = policy_inputs(parse_spec(spec))

    prefill = configs["prefill"]
    assert prefill.role == "prefill"
    assert prefill.min_replicas == 0
    assert prefill.max_replicas == 6
    assert prefill.target_queue_depth == 3.0
    assert prefill.gpus_per_replica == 2
    assert prefill.target_in_flight is None
    assert configs["decode"].gpus_per_replica == 0


def test_pool_scaling_options_map_to_pool_config():
    spec = copy.deepcopy(SPEC)
    spec["prefill"].update({"targetInFlight": 1, "scaleDownStabilizationSeconds": 30})
    spec["decode"].update({"targetInFlight": 6.5})

    configs, _ = policy_inputs(parse_spec(spec))

    assert configs["prefill"].target_in_flight == 1.0
    assert configs["prefill"].scale_down_stabilization_seconds == 30.0
    assert configs["decode"].target_in_flight == 6.5
    assert configs["decode"].scale_down_stabilization_seconds is None


def test_autoscaling_fields_map_to_settings():
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"] = {
        "mode": "builtin",
        "intervalSeconds": 5,
        "scaleUpStabilizationSeconds": 30,
        "scaleDownStabilizationSeconds": 120,
        "maxStepReplicas": 2,
        "tolerance": 0.2,
        "maxTotalGPUs": 8,
        "loadWindowSeconds": 120,
        "maxScaleDownStepReplicas": 1,
    }

    _, settings = policy_inputs(parse_spec(spec))

    assert settings.interval_seconds == 5.0
    assert settings.scale_up_stabilization_seconds == 30.0
    assert settings.scale_down_stabilization_seconds == 120.0
    assert settings.max_step_replicas == 2
    assert settings.tolerance == 0.2
    assert settings.max_total_gpus == 8
    assert settings.load_window_seconds == 120.0
    assert settings.max_scale_down_step_replicas == 1
    assert settings.scale_down_step == 1


def test_defaults_map_to_crd_defaults():
    _, settings = policy_inputs(parse_spec({"model": SPEC["model"], "image": SPEC["image"]}))

    assert settings.interval_seconds == 15.0
    assert settings.scale_up_stabilization_seconds == 0.0
    assert settings.scale_down_stabilization_seconds == 300.0
    assert settings.max_total_gpus is None
    assert settings.load_window_seconds == 0.0
    assert settings.max_scale_down_step_replicas is None


READY = {"type": "Ready", "status": "True"}
POD_CASES = [
    ("ready with IP", {"status": {"podIP": "10.0.0.1", "conditions": [READY]}}, True),
    ("no IP yet", {"status": {"conditions": [READY]}}, False),
    (
        "not ready",
        {"status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]}},
        False,
    ),
    ("no conditions", {"status": {"podIP": "10.0.0.1"}}, False),
    (
        "terminating",
        {
            "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"podIP": "10.0.0.1", "conditions": [READY]},
        },
        False,
    ),
]


def test_is_ready_cases():
    for case, pod, expected in POD_CASES:
        assert is_ready(pod) is expected, case
