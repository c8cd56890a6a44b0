"""A spec change patches only the children of the pools it affects."""

from __future__ import annotations

from disagg_operator import constants as c
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    apply,
    container,
    custom_resource,
    eventually,
    live,
    patch_spec,
    requests_to,
    wait_converged,
    writes,
)


async def test_pool_image_change_rolls_only_that_pool(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    prefill_before = live(cluster, DEPLOYMENTS, f"{NAME}-prefill")
    since = len(list(cluster))

    await patch_spec(cluster, {"decode": {"image": "disagg-worker:0.2.0"}})

    def decode_image_updated() -> None:
        decode = live(cluster, DEPLOYMENTS, f"{NAME}-decode")
        assert container(decode)["image"] == "disagg-worker:0.2.0"

    await eventually(decode_image_updated)
    changed = writes(cluster, since)
    assert requests_to(changed, DEPLOYMENTS, f"{NAME}-prefill") == []
    assert requests_to(changed, DEPLOYMENTS, f"{NAME}-router") == []
    assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill") == prefill_before


async def test_pool_image_change_moves_template_hash(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    def template_hash(role: str) -> str:
        template = live(cluster, DEPLOYMENTS, f"{NAME}-{role}")["spec"]["template"]
        return template["metadata"]["annotations"][c.ANNOTATION_TEMPLATE_HASH]

    before = {role: template_hash(role) for role in c.ROLES}
    await patch_spec(cluster, {"decode": {"image": "disagg-worker:0.2.0"}})
    await eventually(lambda: _assert_changed(template_hash(c.ROLE_DECODE), before["decode"]))

    assert template_hash(c.ROLE_PREFILL) == before[c.ROLE_PREFILL]
    assert template_hash(c.ROLE_ROUTER) == before[c.ROLE_ROUTER]


def _assert_changed(now: str, before: str) -> None:
    assert now != before


async def test_resources_change_patches_only_that_pool(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    since = len(list(cluster))

    await patch_spec(cluster, {"prefill": {"resources": {"limits": {"cpu": "4", "memory": "2Gi"}}}})

    def prefill_limits_updated() -> None:
        limits = container(live(cluster, DEPLOYMENTS, f"{NAME}-prefill"))["resources"]["limits"]
        assert limits["cpu"] == "4"

    await eventually(prefill_limits_updated)
    changed = writes(cluster, since)
    assert requests_to(changed, DEPLOYMENTS, f"{NAME}-decode") == []
    assert requests_to(changed, DEPLOYMENTS, f"{NAME}-router") == []


async def test_router_replicas_change_is_applied(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await patch_spec(cluster, {"router": {"replicas": 3}})

    def router_scaled() -> None:
        assert live(cluster, DEPLOYMENTS, f"{NAME}-router")["spec"]["replicas"] == 3

    await eventually(router_scaled)


async def test_spec_change_updates_observed_generation(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await patch_spec(cluster, {"decode": {"image": "disagg-worker:0.2.0"}})

    def generation_observed() -> None:
        status = live(cluster, CR_RESOURCE, NAME)["status"]
        assert status["observedGeneration"] == 2
        assert {cond["observedGeneration"] for cond in status["conditions"]} == {2}

    await eventually(generation_observed)
