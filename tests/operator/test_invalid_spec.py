"""An invalid spec reports InvalidSpec with the field, warns, and touches no child."""

from __future__ import annotations

import copy

from disagg_operator import constants as c
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    NAMESPACE,
    SPEC,
    UID,
    apply,
    child_names,
    custom_resource,
    events,
    eventually,
    live,
    patch_spec,
    wait_converged,
    writes,
)


def invalid_spec() -> dict:
    spec = copy.deepcopy(SPEC)
    spec["prefill"]["minReplicas"] = 5  # above maxReplicas: 4
    return spec


def available(cluster) -> dict:
    body = live(cluster, CR_RESOURCE, NAME)
    assert body is not None
    conditions = {cond["type"]: cond for cond in (body.get("status") or {}).get("conditions", [])}
    assert c.CONDITION_AVAILABLE in conditions, "no Available condition yet"
    return conditions[c.CONDITION_AVAILABLE]


async def test_invalid_spec_sets_condition(cluster, operator):
    await apply(cluster, custom_resource(invalid_spec()))

    condition = await eventually(lambda: available(cluster))
    assert condition["status"] == c.CONDITION_FALSE
    assert condition["reason"] == c.REASON_INVALID_SPEC
    assert "spec.prefill.minReplicas" in condition["message"]


async def test_invalid_spec_records_warning(cluster, operator):
    await apply(cluster, custom_resource(invalid_spec()))
    await eventually(lambda: available(cluster))

    def warned() -> list:
        found = events(cluster, c.REASON_INVALID_SPEC)
        assert found, "no InvalidSpec event yet"
        return found

    found = await eventually(warned)
    assert found[0]["type"] == c.EVENT_WARNING
    assert found[0]["involvedObject"]["uid"] == UID
    assert "spec.prefill.minReplicas" in found[0]["message"]


async def test_invalid_spec_creates_no_child(cluster, operator):
    await apply(cluster, custom_resource(invalid_spec()))
    await eventually(lambda: available(cluster))

    for resource, names in child_names().items():
        for name in names:
            assert live(cluster, resource, name) is None, f"{resource} {name} was created"


async def test_unreadable_spec_names_field(cluster, operator):
    spec = copy.deepcopy(SPEC)
    del spec["image"]
    await apply(cluster, custom_resource(spec))

    condition = await eventually(lambda: available(cluster))
    assert condition["reason"] == c.REASON_INVALID_SPEC
    assert "spec.image" in condition["message"]


async def test_fixed_spec_creates_children(cluster, operator):
    await apply(cluster, custom_resource(invalid_spec()))
    await eventually(lambda: available(cluster))

    await patch_spec(cluster, {"prefill": {"minReplicas": 1}})
    await wait_converged(cluster)

    def valid() -> None:
        assert available(cluster)["reason"] != c.REASON_INVALID_SPEC

    await eventually(valid)


async def test_invalid_update_leaves_children_alone(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    since = len(list(cluster))

    await patch_spec(cluster, {"decode": {"minReplicas": 9}})

    def invalid() -> None:
        assert available(cluster)["reason"] == c.REASON_INVALID_SPEC

    await eventually(invalid)
    touched = [
        request
        for request in writes(cluster, since)
        if request.resource.plural in ("deployments", "services", "poddisruptionbudgets")
    ]
    assert touched == []


async def test_foreign_object_with_child_name_is_a_conflict(cluster, operator):
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{NAME}-decode", "namespace": NAMESPACE},
        "spec": {"replicas": 1},
    }
    response = await cluster.post(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=foreign)
    assert response.status == 200
    await apply(cluster, custom_resource())

    condition = await eventually(lambda: available(cluster))
    assert condition["reason"] == c.REASON_INVALID_SPEC
    assert "metadata.name" in condition["message"]
    assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill") is None
    assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"] == {"replicas": 1}


async def test_invalid_spec_reports_no_endpoint(cluster, operator):
    await apply(cluster, custom_resource(invalid_spec()))
    await eventually(lambda: available(cluster))

    assert "endpoint" not in live(cluster, CR_RESOURCE, NAME)["status"]


async def test_invalid_update_keeps_live_endpoint(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await patch_spec(cluster, {"decode": {"minReplicas": 9}})

    def invalid() -> None:
        assert available(cluster)["reason"] == c.REASON_INVALID_SPEC

    await eventually(invalid)
    endpoint = live(cluster, CR_RESOURCE, NAME)["status"]["endpoint"]
    assert endpoint == f"http://{NAME}-router.{NAMESPACE}.svc:8000"
