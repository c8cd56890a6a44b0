"""The autoscaler daemon calls the hook per resource every intervalSeconds."""

from __future__ import annotations

import copy

import pytest
from disagg_operator import autoscale
from disagg_operator.handlers import HandlerOptions
from runtime_support import (
    CR_PATH,
    CR_RESOURCE,
    NAME,
    SPEC,
    apply,
    custom_resource,
    eventually,
    live,
    wait_converged,
)


@pytest.fixture
def handler_options() -> HandlerOptions:
    return HandlerOptions(resync_seconds=None, daemon_cancellation_seconds=1.0, autoscaler=True)


@pytest.fixture
def ticks(monkeypatch) -> list[dict]:
    """Replace the autoscaler's tick with one that records its arguments."""
    calls: list[dict] = []

    async def record(*, kube, body, state, logger) -> None:
        state["count"] = state.get("count", 0) + 1
        calls.append({"name": body["metadata"]["name"], "count": state["count"], "kube": kube})

    monkeypatch.setattr(autoscale, "tick", record)
    return calls


async def test_hook_ticks_with_persistent_state(cluster, operator, ticks):
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"] = {"mode": "builtin", "intervalSeconds": 1}
    await apply(cluster, custom_resource(spec))
    await wait_converged(cluster)

    def ticked_twice() -> None:
        assert len(ticks) >= 2

    await eventually(ticked_twice)
    assert {call["name"] for call in ticks} == {NAME}
    assert [call["count"] for call in ticks[:2]] == [1, 2]
    assert ticks[0]["kube"] is operator.memo.kube


async def test_deletion_releases_daemon_finalizer(cluster, operator, ticks):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)

    def finalized() -> None:
        body = live(cluster, CR_RESOURCE, NAME)
        assert body["metadata"].get("finalizers"), "kopf has not added its finalizer yet"

    # kopf guards resources with daemons by a finalizer, so deletion waits for
    # the operator to stop the daemon and release it.
    await eventually(finalized)
    response = await cluster.delete(f"{CR_PATH}/{NAME}")
    assert response.status == 200

    def deleted() -> None:
        assert live(cluster, CR_RESOURCE, NAME) is None

    await eventually(deleted)
