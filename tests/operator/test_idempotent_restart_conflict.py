"""A create that meets an existing child (409) patches it; API errors retry with a delay."""

from __future__ import annotations

import kmock
import kopf
import pytest
from disagg_operator import constants as c
from disagg_operator import status
from disagg_operator.builders import build_children
from disagg_operator.kube import Kube
from disagg_operator.reconcile import reconcile_once
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    NAMESPACE,
    SERVICES,
    apply,
    custom_resource,
    events,
    live,
)

PLURALS = {"Deployment": "deployments", "Service": "services"}


async def create_children(cluster, body: dict) -> None:
    """Create every child as a previous operator run would have."""
    for manifest in build_children(body):
        group_version = manifest["apiVersion"]
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        plural = PLURALS.get(manifest["kind"], "poddisruptionbudgets")
        response = await cluster.post(f"{root}/namespaces/{NAMESPACE}/{plural}", json=manifest)
        assert response.status == 200


@pytest.fixture
def api(cluster):
    kube = Kube.from_environment()
    yield kube
    kube.close()


async def test_create_conflict_patches_existing_child(cluster, api):
    body = custom_resource()
    await apply(cluster, body)
    await create_children(cluster, body)
    # A stale view: the list and the lookups miss the Deployments that exist,
    # so each create meets 409 AlreadyExists.
    deployments = kmock.resource(DEPLOYMENTS)
    cluster["list", deployments][:1] << {"items": []}
    cluster["fetch", deployments][:3] << 404
    since = len(list(cluster))

    outcome = await reconcile_once(api, live(cluster, CR_RESOURCE, NAME))

    conflicts = [
        r for r in list(cluster)[since:] if r.method == "POST" and r.resource == deployments
    ]
    assert len(conflicts) == 3
    assert outcome.created == []
    assert outcome.updated == []


async def test_api_error_raises_temporary_error(cluster, api):
    await apply(cluster, custom_resource())
    cluster["post", kmock.resource(SERVICES)][:1] << 503

    with pytest.raises(kopf.TemporaryError) as raised:
        await reconcile_once(api, live(cluster, CR_RESOURCE, NAME))

    assert raised.value.delay is not None
    assert raised.value.delay > 0


async def test_api_error_marks_degraded(cluster, api):
    await apply(cluster, custom_resource())
    cluster["post", kmock.resource(SERVICES)][:1] << 503

    with pytest.raises(kopf.TemporaryError):
        await reconcile_once(api, live(cluster, CR_RESOURCE, NAME))

    degraded = status.condition(live(cluster, CR_RESOURCE, NAME)["status"], c.CONDITION_DEGRADED)
    assert degraded["status"] == c.CONDITION_TRUE
    assert degraded["reason"] == c.REASON_RECONCILE_ERROR
    assert "503" in degraded["message"]
    assert [e["type"] for e in events(cluster, c.REASON_RECONCILE_ERROR)] == [c.EVENT_WARNING]


async def test_retry_after_api_error_converges(cluster, api):
    await apply(cluster, custom_resource())
    cluster["post", kmock.resource(SERVICES)][:1] << 503
    with pytest.raises(kopf.TemporaryError):
        await reconcile_once(api, live(cluster, CR_RESOURCE, NAME))

    await reconcile_once(api, live(cluster, CR_RESOURCE, NAME))

    degraded = status.condition(live(cluster, CR_RESOURCE, NAME)["status"], c.CONDITION_DEGRADED)
    assert degraded["reason"] != c.REASON_RECONCILE_ERROR
    assert live(cluster, DEPLOYMENTS, f"{NAME}-router") is not None
