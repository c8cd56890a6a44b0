"""Byte-stable output, and template hashes that change only for the affected pools."""

from __future__ import annotations

import json

import pytest
from crd_support import make_body
from disagg_operator import constants as c
from disagg_operator.builders import build_children


def hashes(body):
    out = {}
    for child in build_children(body):
        if child["kind"] == "Deployment":
            role = child["metadata"]["labels"][c.LABEL_ROLE]
            annotation = child["metadata"]["annotations"][c.ANNOTATION_TEMPLATE_HASH]
            template = child["spec"]["template"]["metadata"]["annotations"]
            assert template[c.ANNOTATION_TEMPLATE_HASH] == annotation
            out[role] = annotation
    return out


def test_same_input_same_bytes():
    body = make_body(prefill={"resources": {"limits": {"nvidia.com/gpu": 1}}})
    first = json.dumps(build_children(body))
    second = json.dumps(build_children(json.loads(json.dumps(body))))
    assert first == second


def test_hash_independent_of_key_order():
    first = make_body(decode={"nodeSelector": {"a": "1", "b": "2"}, "maxBatch": 8})
    second = make_body(decode={"maxBatch": 8, "nodeSelector": {"b": "2", "a": "1"}})
    assert hashes(first) == hashes(second)


def test_hash_is_16_hex_digits():
    for value in hashes(make_body()).values():
        assert len(value) == 16
        int(value, 16)


def test_pools_have_distinct_hashes():
    values = hashes(make_body())
    assert len(set(values.values())) == 3


CHANGE_CASES = [
    # (case id, spec overrides, roles whose template hash changes)
    ("prefill-image", {"prefill": {"image": "disagg-worker:0.2.0"}}, {"prefill"}),
    ("prefill-resources-cpu-4", {"prefill": {"resources": {"limits": {"cpu": "4"}}}}, {"prefill"}),
    ("prefill-gpu-1", {"prefill": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, {"prefill"}),
    ("decode-max-batch-32", {"decode": {"maxBatch": 32}}, {"decode"}),
    ("decode-node-selector", {"decode": {"nodeSelector": {"pool": "b"}}}, {"decode"}),
    ("prefill-replicas-2", {"prefill": {"replicas": 2}}, set()),
    ("prefill-max-replicas-8", {"prefill": {"maxReplicas": 8}}, set()),
    ("decode-target-queue-depth-8", {"decode": {"targetQueueDepth": 8}}, set()),
    ("autoscaling-off", {"autoscaling": {"mode": "off"}}, set()),
    ("router-port-8080", {"router": {"port": 8080}}, {"router"}),
    ("router-service-type", {"router": {"serviceType": "LoadBalancer"}}, set()),
    ("min-remote-prefill-0", {"disaggregation": {"minRemotePrefillTokens": 0}}, {"router"}),
    ("decode-drain-120", {"decode": {"drainTimeoutSeconds": 120}}, {"decode", "router"}),
    ("kv-port-50052", {"kvTransfer": {"port": 50052}}, {"prefill", "decode", "router"}),
    ("spec-image", {"image": "disagg-worker:0.2.0"}, {"prefill", "decode", "router"}),
    (
        "spec-image-prefill-pinned",
        {"image": "disagg-worker:0.2.0", "prefill": {"image": "disagg-worker:0.1.0"}},
        {"decode", "router"},
    ),
]


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_spec_change_rolls_only_affected_pools(overrides, changed):
    before = hashes(make_body())
    after = hashes(make_body(**overrides))
    assert {role for role in before if before[role] != after[role]} == changed


def test_replica_override_keeps_hash():
    body = make_body()
    assert hashes(body) == {
        child["metadata"]["labels"][c.LABEL_ROLE]: child["metadata"]["annotations"][
            c.ANNOTATION_TEMPLATE_HASH
        ]
        for child in build_children(body, replicas={"prefill": 3, "decode": 2})
        if child["kind"] == "Deployment"
    }
