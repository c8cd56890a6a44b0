"""drift.plan: which differences between a desired child and the live one cause writes."""

from __future__ import annotations

import copy

import pytest
from disagg_operator import drift

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "demo-decode",
        "namespace": "ns1",
        "labels": {"app.kubernetes.io/name": "disagg", "disagg.dev/role": "decode"},
        "annotations": {"disagg.dev/template-hash": "abc"},
        "ownerReferences": [{"kind": "DisaggregatedDeployment", "uid": "u1", "controller": True}],
    },
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"disagg.dev/role": "decode"}},
        "template": {
            "metadata": {"annotations": {"disagg.dev/template-hash": "abc"}},
            "spec": {
                "containers": [
                    {
                        "name": "worker",
                        "image": "disagg-worker:0.1.0",
                        "resources": {"limits": {"memory": "2048Mi", "cpu": "2"}},
                        "ports": [{"name": "grpc", "containerPort": 50051}],
                    }
                ],
                "tolerations": [],
            },
        },
    },
}


def server_view(manifest: dict) -> dict:
    """Return `manifest` as an API server stores it: defaults added, empty values dropped."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="x", resourceVersion="7", generation=3)
    live["metadata"]["labels"]["added-by-someone"] = "yes"
    pod = live["spec"]["template"]["spec"]
    del pod["tolerations"]
    pod["restartPolicy"] = "Always"
    pod["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    pod["containers"][0]["resources"]["limits"]["memory"] = "2Gi"
    pod["containers"][0]["ports"][0]["protocol"] = "TCP"
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["status"] = {"readyReplicas": 1}
    return live


def test_server_defaults_plan_nothing():
    assert drift.plan(DESIRED, server_view(DESIRED)).empty


def test_changed_image_replaces_template():
    live = server_view(DESIRED)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "other:1"

    planned = drift.plan(DESIRED, live)

    assert planned.changed == ("spec.template",)
    assert planned.operations[0]["path"] == "/spec/template"
    assert planned.operations[0]["value"] == DESIRED["spec"]["template"]


def test_changed_label_is_set_alone():
    live = server_view(DESIRED)
    live["metadata"]["labels"]["disagg.dev/role"] = "prefill"

    planned = drift.plan(DESIRED, live)

    assert planned.operations == (
        {"op": "add", "path": "/metadata/labels/disagg.dev~1role", "value": "decode"},
    )


def test_replicas_skipped_when_owned_elsewhere():
    live = server_view(DESIRED)
    live["spec"]["replicas"] = 5

    assert drift.plan(DESIRED, live, skip_spec_fields=frozenset({"replicas"})).empty
    assert drift.plan(DESIRED, live).changed == ("spec.replicas",)


def test_changed_selector_recreates():
    live = server_view(DESIRED)
    live["spec"]["selector"] = {"matchLabels": {"app": "old"}}

    planned = drift.plan(DESIRED, live)

    assert planned.recreate == ("spec.selector",)
    assert planned.operations == ()


def test_missing_owner_reference_is_restored():
    live = server_view(DESIRED)
    del live["metadata"]["ownerReferences"]

    assert drift.plan(DESIRED, live).changed == ("metadata.ownerReferences",)


@pytest.mark.parametrize(
    "live, desired, expected",
    [
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ({}, {"a": []}, True),
        ({}, {"a": False}, True),
        ({}, {"a": "x"}, False),
        ([1, 2], [1], False),
        ([{"a": 1, "b": 2}], [{"a": 1}], True),
        ("1Gi", "1024Mi", True),
        (8000, "8000", True),
        ("500m", "0.5", True),
        ("2", "3", False),
        (True, 1, False),
    ],
    ids=[
        "extra-key",
        "changed-value",
        "empty-list-absent",
        "false-absent",
        "missing-value",
        "list-length",
        "list-items-subset",
        "quantity-units",
        "int-as-string",
        "millicores",
        "different-quantity",
        "bool-is-not-int",
    ],
)
def test_contains(live, desired, expected):
    assert drift.contains(live, desired) is expected
