"""The CRD's CEL rules, evaluated with cel-python on defaulted bodies.

Each case also runs through spec.load, which must report the same field:
the operator applies the same rules where no API server enforces the CRD.
The rules on metadata.name sit at the root of the schema and carry no
fieldPath, so CEL reports them at the root ("").
"""

from __future__ import annotations

import pytest
from crd_support import cel_violations, make_body, root_schema
from disagg_operator.spec import load

CASES = [
    # (case id, body, field that both the CEL rule and spec.load report; None = valid)
    ("defaults-valid", make_body(), None),
    (
        "prefill-min-3-max-2",
        make_body(prefill={"minReplicas": 3, "maxReplicas": 2}),
        "spec.prefill.minReplicas",
    ),
    (
        "decode-min-5-max-4",
        make_body(decode={"minReplicas": 5, "replicas": 5}),
        "spec.decode.minReplicas",
    ),
    ("decode-replicas-5-max-4", make_body(decode={"replicas": 5}), "spec.decode.replicas"),
    ("prefill-replicas-0-min-1", make_body(prefill={"replicas": 0}), "spec.prefill.replicas"),
    ("prefill-replicas-0-min-0", make_body(prefill={"replicas": 0, "minReplicas": 0}), None),
    (
        "prefill-min-eq-max-2",
        make_body(prefill={"replicas": 2, "minReplicas": 2, "maxReplicas": 2}),
        None,
    ),
    ("kv-port-9090-metrics-9090", make_body(kvTransfer={"port": 9090}), "spec.metricsPort"),
    ("metrics-port-50051-kv-50051", make_body(metricsPort=50051), "spec.metricsPort"),
    ("kv-port-50052-metrics-9090", make_body(kvTransfer={"port": 50052}), None),
    ("name-55-chars", make_body(name="a" * 55), None),
    ("name-56-chars", make_body(name="a" * 56), "metadata.name"),
    ("name-starts-with-digit-1abc", make_body(name="1abc"), "metadata.name"),
    ("name-uppercase-Demo", make_body(name="Demo"), "metadata.name"),
    ("name-ends-with-dash", make_body(name="demo-"), "metadata.name"),
]


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_cel_rule_outcome(body, field):
    violations = cel_violations(body)
    if field is None:
        assert violations == []
    else:
        cel_path = "" if field == "metadata.name" else field
        assert cel_path in {path for path, _ in violations}


@pytest.mark.parametrize(
    ("body", "field"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_cel_rule_matches_spec_load(body, field):
    _, problems = load(body)
    if field is None:
        assert problems == []
    else:
        assert field in {problem.field for problem in problems}


def test_cel_rules_all_compile():
    import celpy

    environment = celpy.Environment()
    rules = []

    def collect(schema):
        rules.extend(rule["rule"] for rule in schema.get("x-kubernetes-validations", []))
        for child in schema.get("properties", {}).values():
            collect(child)
        if "items" in schema:
            collect(schema["items"])

    collect(root_schema())
    assert len(rules) == 7
    for rule in rules:
        environment.compile(rule)


def test_cel_messages_name_the_fix():
    violations = dict(cel_violations(make_body(prefill={"minReplicas": 3, "maxReplicas": 2})))
    assert "maxReplicas" in violations["spec.prefill.minReplicas"]
