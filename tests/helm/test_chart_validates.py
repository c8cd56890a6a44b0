"""Every object the chart renders is valid Kubernetes, for each value combination.

Built-in kinds are checked with kubernetes-validate in strict mode (unknown
fields are errors) against the oldest Kubernetes version that Chart.yaml admits and
the newest one kubernetes-validate ships. kopf.dev peering objects are checked
against the peering CRD in the chart's crds/. monitoring.coreos.com objects
have no schema here (the Prometheus Operator CRDs are not vendored); their
structure is tested in test_chart_monitoring.py.
"""

from __future__ import annotations

import re

import jsonschema
import kubernetes_validate
import pytest
import yaml
from chart_support import CHART_DIR, VALUE_CASES


def _minimum_kubernetes_version() -> str:
    """Return MAJOR.MINOR of the lowest version Chart.yaml's kubeVersion admits."""
    constraint = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"]
    return re.fullmatch(r">=(\d+\.\d+)\.\d+(-0)?", constraint).group(1)


KUBERNETES_VERSIONS = (_minimum_kubernetes_version(), kubernetes_validate.latest_version())
CUSTOM_GROUPS_CHECKED_ELSEWHERE = ("monitoring.coreos.com/",)


def _peering_schemas() -> dict[str, dict]:
    """Return the openAPIV3Schema of each kind in the chart's kopf peering CRDs."""
    text = (CHART_DIR / "crds" / "kopf.dev_peerings.yaml").read_text()
    schemas = {}
    for crd in yaml.safe_load_all(text):
        if crd:
            kind = crd["spec"]["names"]["kind"]
            schemas[kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("case", VALUE_CASES)
def test_rendered_objects_validate(render, case, version):
    rendered = render(VALUE_CASES[case])
    peering_schemas = _peering_schemas()
    assert rendered.objects, f"case {case} rendered no objects"

    for item in rendered.objects:
        where = f"{item['kind']}/{item['metadata']['name']} in case {case}"
        if item["apiVersion"].startswith(CUSTOM_GROUPS_CHECKED_ELSEWHERE):
            continue
        if item["apiVersion"] == "kopf.dev/v1":
            jsonschema.validate(item, peering_schemas[item["kind"]])
            continue
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {path}: {error.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_chart_crds_validate(version):
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            try:
                kubernetes_validate.validate(crd, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                location = ".".join(str(part) for part in error.path)
                pytest.fail(
                    f"{path.name} is invalid for Kubernetes {version}: {location}: {error.message}"
                )


def test_every_object_carries_chart_labels(render):
    rendered = render()
    for item in rendered.objects:
        labels = item["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "disagg", item["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", item["metadata"]["name"]
