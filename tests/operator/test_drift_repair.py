"""A child deleted or edited by hand is put back."""

from __future__ import annotations

import pytest
from disagg_operator import constants as c
from disagg_operator.handlers import HandlerOptions
from runtime_support import (
    DEPLOYMENTS,
    NAME,
    PDBS,
    SERVICES,
    apply,
    container,
    custom_resource,
    delete_child,
    eventually,
    live,
    patch_child,
    patch_spec,
    wait_converged,
)


async def test_deleted_deployment_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    expected = live(cluster, DEPLOYMENTS, f"{NAME}-decode")

    await delete_child(cluster, DEPLOYMENTS, f"{NAME}-decode")

    def restored() -> None:
        decode = live(cluster, DEPLOYMENTS, f"{NAME}-decode")
        assert decode is not None
        assert decode["spec"]["template"] == expected["spec"]["template"]

    await eventually(restored)


async def test_deleted_service_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await delete_child(cluster, SERVICES, f"{NAME}-router")

    await eventually(lambda: _assert_exists(cluster, SERVICES, f"{NAME}-router"))


async def test_deleted_pdb_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await delete_child(cluster, PDBS, f"{NAME}-prefill")

    await eventually(lambda: _assert_exists(cluster, PDBS, f"{NAME}-prefill"))


def _assert_exists(cluster, resource: str, name: str) -> None:
    assert live(cluster, resource, name) is not None, f"{resource} {name} is missing"


async def test_edited_service_port_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    expected = live(cluster, SERVICES, f"{NAME}-router")["spec"]["ports"]
    edited = [dict(port, port=9999) for port in expected]

    await patch_child(cluster, SERVICES, f"{NAME}-router", {"spec": {"ports": edited}})

    def restored() -> None:
        assert live(cluster, SERVICES, f"{NAME}-router")["spec"]["ports"] == expected

    await eventually(restored)


async def test_edited_container_image_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    template = live(cluster, DEPLOYMENTS, f"{NAME}-prefill")["spec"]["template"]
    template["spec"]["containers"][0]["image"] = "someone-else:latest"

    await patch_child(cluster, DEPLOYMENTS, f"{NAME}-prefill", {"spec": {"template": template}})

    def restored() -> None:
        prefill = live(cluster, DEPLOYMENTS, f"{NAME}-prefill")
        assert container(prefill)["image"] == "disagg-worker:0.1.0"

    await eventually(restored)


async def test_removed_label_is_restored(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    # Without the label the child leaves the labelled list; its owner
    # reference still marks it as this resource's child.
    await patch_child(
        cluster, DEPLOYMENTS, f"{NAME}-router", {"metadata": {"labels": {c.LABEL_DEPLOYMENT: None}}}
    )

    def restored() -> None:
        labels = live(cluster, DEPLOYMENTS, f"{NAME}-router")["metadata"]["labels"]
        assert labels.get(c.LABEL_DEPLOYMENT) == NAME

    # The child lost the label that routes its events to the parent, so the
    # next reconcile of the parent repairs it: a change of the parent's spec.
    await patch_spec(cluster, {"router": {"replicas": 2}})
    await eventually(restored)


async def test_edited_selector_recreates_deployment(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    expected = live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["selector"]

    # A selector cannot change in place on a real API server, but kmock lets it.
    edited = {key: "hand-made" for key in expected["matchLabels"]}
    await patch_child(
        cluster, DEPLOYMENTS, f"{NAME}-decode", {"spec": {"selector": {"matchLabels": edited}}}
    )

    def recreated() -> None:
        decode = live(cluster, DEPLOYMENTS, f"{NAME}-decode")
        assert decode is not None
        assert decode["spec"]["selector"] == expected

    await eventually(recreated)
    deletes = [r for r in list(cluster) if r.method == "DELETE" and r.name == f"{NAME}-decode"]
    assert len(deletes) == 1


class TestResyncTimer:
    """The periodic resync alone repairs drift, with no watch of the children."""

    @pytest.fixture
    def handler_options(self) -> HandlerOptions:
        return HandlerOptions(
            resync_seconds=0.5,
            daemon_cancellation_seconds=1.0,
            watch_children=False,
            autoscaler=False,
        )

    async def test_timer_restores_deleted_deployment(self, cluster, operator):
        await apply(cluster, custom_resource())
        await wait_converged(cluster)

        await delete_child(cluster, DEPLOYMENTS, f"{NAME}-decode")

        await eventually(lambda: _assert_exists(cluster, DEPLOYMENTS, f"{NAME}-decode"))
