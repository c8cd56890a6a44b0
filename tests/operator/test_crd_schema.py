"""The CRD: valid for Kubernetes, names from the constants, documented, defaults as spec.py."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from crd_support import (
    apply_defaults,
    iter_properties,
    load_crd,
    make_body,
    root_schema,
    schema_errors,
    set_path,
)
from disagg_operator import constants as c
from disagg_operator.spec import parse_spec, to_dict, validate

# The oldest Kubernetes that the CRD and the children target (the preStop
# sleep action is on by default from 1.30), and the newest schema installed.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_crd_validates_against_kubernetes(version):
    kubernetes_validate.validate(load_crd(), version, strict=True)


def test_crd_names_match_constants():
    crd = load_crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == c.CRD_NAME
    assert crd["spec"]["group"] == c.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["kind"] == c.KIND
    assert names["plural"] == c.PLURAL
    assert names["singular"] == c.SINGULAR
    assert names["shortNames"] == [c.SHORT_NAME]


def test_crd_serves_one_version_with_status():
    (version,) = load_crd()["spec"]["versions"]
    assert version["name"] == c.VERSION
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_crd_every_field_has_description():
    undocumented = [
        path
        for path, schema in iter_properties(root_schema())
        if path != "metadata" and not schema.get("description", "").strip()
    ]
    assert undocumented == []


def test_crd_spec_requires_model_and_image():
    assert root_schema()["properties"]["spec"]["required"] == ["model", "image"]


def test_crd_pool_schemas_differ_only_in_min_replicas():
    spec = root_schema()["properties"]["spec"]["properties"]

    def strip(schema):
        # Descriptions may name the pool; everything else must be equal.
        schema = copy.deepcopy(schema)
        for _, child in iter_properties(schema):
            child.pop("description", None)
        schema.pop("description", None)
        del schema["properties"]["minReplicas"]["minimum"]
        return schema

    assert strip(spec["prefill"]) == strip(spec["decode"])


def test_crd_min_replicas_floor_prefill_0_decode_1():
    spec = root_schema()["properties"]["spec"]["properties"]
    assert spec["prefill"]["properties"]["minReplicas"]["minimum"] == 0
    assert spec["decode"]["properties"]["minReplicas"]["minimum"] == 1


def test_crd_defaults_equal_spec_defaults():
    body = make_body()
    from_crd = apply_defaults(root_schema(), body)["spec"]
    from_parser = to_dict(parse_spec(body["spec"]))
    assert from_parser == from_crd


def test_crd_defaults_fill_partial_pool():
    # A pool with only replicas set still gets every other default.
    body = make_body(prefill={"replicas": 2, "maxReplicas": 3})
    from_crd = apply_defaults(root_schema(), body)["spec"]
    assert from_crd == to_dict(parse_spec(body["spec"]))


def test_crd_enums_match_constants():
    spec = root_schema()["properties"]["spec"]["properties"]
    assert spec["imagePullPolicy"]["enum"] == list(c.IMAGE_PULL_POLICIES)
    assert spec["router"]["properties"]["serviceType"]["enum"] == list(c.SERVICE_TYPES)
    assert spec["autoscaling"]["properties"]["mode"]["enum"] == list(c.AUTOSCALING_MODES)


def test_crd_ports_range_1_to_65535():
    ports = {
        path: schema
        for path, schema in iter_properties(root_schema())
        if path.endswith(("port", "Port")) and path.startswith("spec")
    }
    assert sorted(ports) == ["spec.kvTransfer.port", "spec.metricsPort", "spec.router.port"]
    for path, schema in ports.items():
        assert (schema["minimum"], schema["maximum"]) == (1, 65535), path


def _bounded_fields():
    for path, schema in iter_properties(root_schema()):
        if not path.startswith("spec.") or "[]" in path:
            continue
        if schema.get("exclusiveMinimum"):
            yield path, "exclusiveMinimum", schema["minimum"]
        elif "minimum" in schema:
            yield path, "minimum", schema["minimum"] - (1 if schema["type"] == "integer" else 0.5)
        if schema.get("exclusiveMaximum"):
            yield path, "exclusiveMaximum", schema["maximum"]
        elif "maximum" in schema:
            yield path, "maximum", schema["maximum"] + 1


@pytest.mark.parametrize(("path", "bound", "value"), list(_bounded_fields()), ids=lambda v: str(v))
def test_crd_bounds_also_checked_by_validate(path, bound, value):
    # kmock and API servers without the CRD skip the schema; validate must
    # reject the same out-of-range values.
    body = make_body()
    set_path(body, path, value)
    assert schema_errors(body), f"the schema accepts {path}={value}"
    problems = validate(parse_spec(body["spec"]))
    assert path in {problem.field for problem in problems}


def _enum_fields():
    for path, schema in iter_properties(root_schema()):
        if path.startswith("spec.") and "[]" not in path and "enum" in schema:
            yield path


@pytest.mark.parametrize("path", list(_enum_fields()))
def test_crd_enums_also_checked_by_validate(path):
    body = make_body()
    set_path(body, path, "Bogus")
    assert schema_errors(body), f"the schema accepts {path}=Bogus"
    problems = validate(parse_spec(body["spec"]))
    assert path in {problem.field for problem in problems}


def _non_empty_fields():
    for path, schema in iter_properties(root_schema()):
        if path.startswith("spec.") and "[]" not in path and schema.get("minLength") == 1:
            yield path


@pytest.mark.parametrize("path", list(_non_empty_fields()))
def test_crd_min_length_also_checked_by_validate(path):
    body = make_body()
    set_path(body, path, "")
    assert schema_errors(body), f"the schema accepts {path}=''"
    problems = validate(parse_spec(body["spec"]))
    assert path in {problem.field for problem in problems}


def test_crd_printer_columns_point_at_status_fields():
    (version,) = load_crd()["spec"]["versions"]
    known = {f".{path}" for path, _ in iter_properties(root_schema())}
    for column in version["additionalPrinterColumns"]:
        json_path = column["jsonPath"].split("[")[0]
        assert json_path in known or json_path == ".metadata.creationTimestamp", column["name"]


def test_crd_printer_columns_cover_pools_and_available():
    (version,) = load_crd()["spec"]["versions"]
    names = [column["name"] for column in version["additionalPrinterColumns"]]
    expected = [
        "Prefill-Ready",
        "Prefill-Desired",
        "Decode-Ready",
        "Decode-Desired",
        "Prefill-Queue",
        "Decode-Queue",
        "Available",
    ]
    for name in expected:
        assert name in names
    assert names[-1] == "Age"


def test_crd_condition_types_documented():
    conditions = root_schema()["properties"]["status"]["properties"]["conditions"]
    for condition_type in c.CONDITION_TYPES:
        assert condition_type in conditions["description"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_crd_status_fields_for_each_pool():
    status = root_schema()["properties"]["status"]["properties"]
    fields = {
        "replicas",
        "readyReplicas",
        "desiredReplicas",
        "queueDepth",
        "lastScaleTime",
        "lastScaleReason",
    }
    for role in c.WORKER_ROLES:
        assert set(status[role]["properties"]) == fields, role
    assert "observedGeneration" in status
    assert "endpoint" in status


def test_crd_schema_rejects_unknown_field():
    body = make_body(prefil={"replicas": 2})
    assert any("prefil" in error for error in schema_errors(body))


def test_crd_schema_accepts_minimal_body():
    assert schema_errors(make_body()) == []
