"""Test helpers for the CRD: loading, API-server-style defaulting, JSON Schema and CEL.

There is no API server in the tests, so these helpers do what it would do
with the CRD: apply schema defaults, check the structural schema (with
unknown fields rejected, as `kubectl apply` does with strict field
validation) and evaluate the x-kubernetes-validations CEL rules.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "disagg.dev_disaggregateddeployments.yaml"
EXAMPLE_PATHS = sorted((ROOT / "examples").glob("*.yaml"))


@cache
def _crd_text() -> str:
    return CRD_PATH.read_text()


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(_crd_text())


def root_schema() -> dict[str, Any]:
    """Return the openAPIV3Schema of the only served version."""
    (version,) = load_crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def make_body(name: str = "demo", namespace: str = "models", **spec: Any) -> dict[str, Any]:
    """Return a custom resource body with a minimal valid spec, updated by `spec`."""
    base = {
        "model": {"name": "SmolLM2-135M-Instruct", "source": "smollm2"},
        "image": "disagg-worker:0.1.0",
    }
    base.update(spec)
    return {
        "apiVersion": "disagg.dev/v1alpha1",
        "kind": "DisaggregatedDeployment",
        "metadata": {"name": name, "namespace": namespace, "uid": "0b9f6c1e-uid", "generation": 1},
        "spec": base,
    }


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Return `value` with the schema's defaults applied, the way an API server does.

    A missing property with a default gets it, and the default itself is
    defaulted, so `default: {}` on an object fills in its children.
    """
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for key, child in schema.get("properties", {}).items():
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
            if key in value:
                value[key] = apply_defaults(child, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if key not in schema.get("properties", {}):
                    value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def to_json_schema(schema: Any) -> Any:
    """Convert the CRD's OpenAPI schema to JSON Schema.

    Drops x-kubernetes-* keys, turns OpenAPI 3.0's boolean exclusiveMaximum
    and exclusiveMinimum into the numeric form of JSON Schema, and forbids unknown properties
    where the schema lists properties and does not preserve unknown fields.
    """
    if isinstance(schema, list):
        return [to_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, item in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "definitions"):
            out[key] = {name: to_json_schema(child) for name, child in item.items()}
        else:
            out[key] = to_json_schema(item)
    if schema.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if schema.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    preserves = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not preserves and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def schema_errors(body: dict[str, Any]) -> list[str]:
    """Return the JSON Schema errors of a defaulted body, as 'path: message'."""
    validator = jsonschema.Draft7Validator(to_json_schema(root_schema()))
    defaulted = apply_defaults(root_schema(), body)
    errors = []
    for error in sorted(validator.iter_errors(defaulted), key=lambda e: list(e.path)):
        path = ".".join(str(part) for part in error.path)
        errors.append(f"{path}: {error.message}")
    return errors


def cel_violations(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Evaluate every CEL rule of the CRD on a defaulted body.

    Returns (path, message) for each rule that evaluates to false, where
    path is the schema node of the rule plus its fieldPath.
    """
    environment = celpy.Environment()
    defaulted = apply_defaults(root_schema(), body)
    violations: list[tuple[str, str]] = []

    def walk(schema: dict[str, Any], value: Any, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            program = environment.program(environment.compile(rule["rule"]))
            result = program.evaluate({"self": celpy.json_to_cel(value)})
            if isinstance(result, Exception):
                raise AssertionError(f"rule {rule['rule']!r} at {path} failed: {result}")
            if not bool(result):
                violations.append((path + rule.get("fieldPath", ""), rule["message"]))
        if isinstance(value, dict):
            for key, child in schema.get("properties", {}).items():
                if key in value:
                    walk(child, value[key], f"{path}.{key}" if path else key)
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                walk(schema["items"], item, f"{path}[{index}]")

    walk(root_schema(), defaulted, "")
    return violations


def iter_properties(schema: dict[str, Any], path: str = ""):
    """Yield (path, schema) of every property below `schema`, list items as `[]`."""
    for key, child in schema.get("properties", {}).items():
        child_path = f"{path}.{key}" if path else key
        yield child_path, child
        yield from iter_properties(child, child_path)
        if "items" in child:
            yield from iter_properties(child["items"], child_path + "[]")


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (no list items) in a body, creating objects on the way."""
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
