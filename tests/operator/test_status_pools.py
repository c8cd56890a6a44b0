"""The parent's status follows the child Deployments' replica counts."""

from __future__ import annotations

from disagg_operator import constants as c
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    apply,
    custom_resource,
    eventually,
    live,
    patch_child,
    wait_converged,
)


def conditions(cluster) -> dict[str, dict]:
    body = live(cluster, CR_RESOURCE, NAME)
    return {cond["type"]: cond for cond in body["status"]["conditions"]}


async def mark_ready(cluster, role: str, replicas: int) -> None:
    """Write a Deployment status as the Deployment controller would."""
    status = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    await patch_child(
        cluster, DEPLOYMENTS, f"{NAME}-{role}", {"status": status}, subresource="status"
    )


async def test_new_resource_is_not_available(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    available = conditions(cluster)[c.CONDITION_AVAILABLE]
    assert available["status"] == c.CONDITION_FALSE
    assert available["reason"] == c.REASON_PODS_NOT_READY


async def test_starting_resource_not_degraded(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    degraded = conditions(cluster)[c.CONDITION_DEGRADED]
    assert (degraded["status"], degraded["reason"]) == (c.CONDITION_FALSE, c.REASON_AS_EXPECTED)
    assert "rollout is in progress" in degraded["message"]


async def test_ready_children_update_pool_status(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await mark_ready(cluster, c.ROLE_DECODE, 2)

    def decode_counted() -> None:
        status = live(cluster, CR_RESOURCE, NAME)["status"]
        assert status["decode"] == {"replicas": 2, "readyReplicas": 2, "desiredReplicas": 2}

    await eventually(decode_counted)


async def test_ready_router_and_decode_make_available(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await mark_ready(cluster, c.ROLE_DECODE, 2)
    await mark_ready(cluster, c.ROLE_ROUTER, 1)

    def available() -> None:
        assert conditions(cluster)[c.CONDITION_AVAILABLE]["status"] == c.CONDITION_TRUE

    await eventually(available)
    # Prefill has no ready replica: requests fall back to local prefill.
    assert conditions(cluster)[c.CONDITION_DEGRADED]["status"] == c.CONDITION_TRUE


async def test_all_pools_ready_ends_rollout(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    await mark_ready(cluster, c.ROLE_PREFILL, 1)
    await mark_ready(cluster, c.ROLE_DECODE, 2)
    await mark_ready(cluster, c.ROLE_ROUTER, 1)

    def rolled_out() -> None:
        found = conditions(cluster)
        assert found[c.CONDITION_PROGRESSING]["status"] == c.CONDITION_FALSE
        assert found[c.CONDITION_DEGRADED]["status"] == c.CONDITION_FALSE
        assert found[c.CONDITION_AVAILABLE]["status"] == c.CONDITION_TRUE

    await eventually(rolled_out)


async def test_transition_time_kept_while_status_holds(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    before = conditions(cluster)[c.CONDITION_PROGRESSING]

    # Still rolling out, with a different message: the time must not move.
    await mark_ready(cluster, c.ROLE_DECODE, 1)

    def message_changed() -> dict:
        now = conditions(cluster)[c.CONDITION_PROGRESSING]
        assert now["message"] != before["message"]
        return now

    now = await eventually(message_changed)
    assert now["status"] == before["status"]
    assert now["lastTransitionTime"] == before["lastTransitionTime"]
