"""Applying a DisaggregatedDeployment creates every child with the expected fields."""

from __future__ import annotations

from disagg_operator import constants as c
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    NAMESPACE,
    PDBS,
    SERVICES,
    UID,
    apply,
    child_names,
    custom_resource,
    events,
    live,
    wait_converged,
)


async def test_apply_creates_every_child(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    for resource, names in child_names().items():
        for name in names:
            assert live(cluster, resource, name) is not None, f"{resource} {name}"


async def test_children_carry_owner_reference(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    # kmock runs no garbage collector: the owner reference is what lets the
    # cluster's collector delete the children with the resource.
    for resource, names in child_names().items():
        for name in names:
            owners = live(cluster, resource, name)["metadata"]["ownerReferences"]
            assert [(o["kind"], o["name"], o["uid"], o["controller"]) for o in owners] == [
                (c.KIND, NAME, UID, True)
            ], f"{resource} {name}"


async def test_children_carry_labels(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    for role in c.ROLES:
        labels = live(cluster, DEPLOYMENTS, f"{NAME}-{role}")["metadata"]["labels"]
        assert labels[c.LABEL_DEPLOYMENT] == NAME
        assert labels[c.LABEL_ROLE] == role
        assert labels[c.LABEL_MANAGED_BY] == c.MANAGER_NAME


async def test_deployments_start_at_spec_replicas(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill")["spec"]["replicas"] == 1
    assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["replicas"] == 2
    assert live(cluster, DEPLOYMENTS, f"{NAME}-router")["spec"]["replicas"] == 1


async def test_worker_services_are_headless(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    assert live(cluster, SERVICES, f"{NAME}-prefill")["spec"]["clusterIP"] == "None"
    assert live(cluster, SERVICES, f"{NAME}-decode")["spec"]["clusterIP"] == "None"
    assert live(cluster, SERVICES, f"{NAME}-router")["spec"].get("clusterIP") != "None"


async def test_pdbs_select_their_pool(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    for role in c.WORKER_ROLES:
        selector = live(cluster, PDBS, f"{NAME}-{role}")["spec"]["selector"]["matchLabels"]
        assert selector[c.LABEL_ROLE] == role


async def test_status_reports_endpoint(cluster, operator):
    await apply(cluster, custom_resource())
    body = await wait_converged(cluster)

    assert body["status"]["endpoint"] == f"http://{NAME}-router.{NAMESPACE}.svc:8000"
    assert body["status"]["observedGeneration"] == 1


async def test_creation_records_events(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    created = events(cluster, c.REASON_CREATED)
    assert len(created) == 8
    assert {event["involvedObject"]["uid"] for event in created} == {UID}
    assert {event["type"] for event in created} == {c.EVENT_NORMAL}


async def test_resource_is_not_rewritten_by_kopf_status(cluster, operator):
    await apply(cluster, custom_resource())
    body = await wait_converged(cluster)

    # kopf keeps its bookkeeping in annotations, not in the schema-less status.
    assert "kopf" not in body["status"]
    assert live(cluster, CR_RESOURCE, NAME)["spec"]["image"] == "disagg-worker:0.1.0"
