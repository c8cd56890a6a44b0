"""Who owns spec.replicas of a worker Deployment: the spec only with autoscaling off."""

from __future__ import annotations

import copy

from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    SPEC,
    apply,
    container,
    custom_resource,
    delete_child,
    eventually,
    live,
    patch_child,
    patch_spec,
    reconcile_now,
    wait_converged,
)


def spec_with_mode(mode: str) -> dict:
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"] = {"mode": mode}
    return spec


async def test_builtin_keeps_scaled_replicas(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("builtin")))
    await wait_converged(cluster)

    # The autoscaler scaled the decode pool from 2 to 3.
    await patch_child(cluster, DEPLOYMENTS, f"{NAME}-decode", {"spec": {"replicas": 3}})
    await reconcile_now(operator)

    assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["replicas"] == 3


async def test_builtin_ignores_spec_replicas_change(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("builtin")))
    await wait_converged(cluster)

    await patch_spec(cluster, {"decode": {"replicas": 4, "image": "disagg-worker:0.2.0"}})

    def image_rolled() -> None:
        decode = live(cluster, DEPLOYMENTS, f"{NAME}-decode")
        assert container(decode)["image"] == "disagg-worker:0.2.0"

    await eventually(image_rolled)
    assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["replicas"] == 2


async def test_external_keeps_scaled_replicas(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("external")))
    await wait_converged(cluster)

    # An HPA scaled the prefill pool from 1 to 4.
    await patch_child(cluster, DEPLOYMENTS, f"{NAME}-prefill", {"spec": {"replicas": 4}})
    await reconcile_now(operator)

    assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill")["spec"]["replicas"] == 4


async def test_off_restores_spec_replicas(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("off")))
    await wait_converged(cluster)

    await patch_child(cluster, DEPLOYMENTS, f"{NAME}-decode", {"spec": {"replicas": 3}})

    def restored() -> None:
        assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["replicas"] == 2

    await eventually(restored)


async def test_off_applies_spec_replicas_change(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("off")))
    await wait_converged(cluster)

    await patch_spec(cluster, {"decode": {"replicas": 4}})

    def scaled() -> None:
        assert live(cluster, DEPLOYMENTS, f"{NAME}-decode")["spec"]["replicas"] == 4

    await eventually(scaled)


async def test_builtin_recreates_at_last_desired_replicas(cluster, operator):
    await apply(cluster, custom_resource(spec_with_mode("builtin")))
    await wait_converged(cluster)
    # The autoscaler's last decision for decode was 3 replicas.
    await patch_child(
        cluster,
        CR_RESOURCE,
        NAME,
        {"status": {"decode": {"desiredReplicas": 3}}},
        subresource="status",
    )
    await patch_child(cluster, DEPLOYMENTS, f"{NAME}-decode", {"spec": {"replicas": 3}})

    await delete_child(cluster, DEPLOYMENTS, f"{NAME}-decode")

    def recreated() -> None:
        decode = live(cluster, DEPLOYMENTS, f"{NAME}-decode")
        assert decode is not None
        assert decode["spec"]["replicas"] == 3

    await eventually(recreated)
