"""The operator's autoscaler daemon scales a pool from its pods' queue depth, end to end.

kopf runs the handlers in-process against kmock; the daemon ticks every
second and scrapes real HTTP servers on 127.0.0.x that stand in for pods.
"""

from __future__ import annotations

import json

import pytest
from autoscale_support import FakePods, autoscaled_spec, free_port
from disagg_operator import constants as c
from disagg_operator.handlers import HandlerOptions
from runtime_support import (
    CR_RESOURCE,
    DEPLOYMENTS,
    NAME,
    apply,
    custom_resource,
    events,
    eventually,
    live,
    patch_spec,
    wait_converged,
)


@pytest.fixture
def handler_options() -> HandlerOptions:
    # The autoscaler daemon on; each test then waits kopf's 5 s shutdown grace time.
    return HandlerOptions(resync_seconds=None, daemon_cancellation_seconds=1.0, autoscaler=True)


@pytest.fixture
async def pods(cluster):
    fake = FakePods(cluster, free_port())
    yield fake
    await fake.close()


def pool_status(cluster, role: str) -> dict:
    return (live(cluster, CR_RESOURCE, NAME).get("status") or {}).get(role) or {}


async def test_daemon_scales_and_reports(cluster, operator, pods):
    await apply(cluster, custom_resource(autoscaled_spec(pods.port)))
    await wait_converged(cluster)
    prefill = await pods.add("prefill", queue_depth=11, in_flight=1)
    await pods.add("decode", queue_depth=4)
    await pods.add("decode", queue_depth=4)

    def scaled_up() -> None:
        assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill")["spec"]["replicas"] == 3
        status = pool_status(cluster, "prefill")
        assert status.get("desiredReplicas") == 3
        assert status.get("queueDepth") == 11
        assert status.get("lastScaleReason", "").startswith("prefill 1→3")

    await eventually(scaled_up)
    assert len(events(cluster, reason=c.REASON_SCALED)) == 1

    # The daemon keeps ticking: the next reading shows up in the status.
    prefill.load(queue_depth=12, in_flight=1)
    await eventually(lambda: _assert_equal(pool_status(cluster, "prefill").get("queueDepth"), 12))


async def test_daemon_stops_when_mode_turns_off(cluster, operator, pods):
    await apply(cluster, custom_resource(autoscaled_spec(pods.port, mode="external")))
    await wait_converged(cluster)
    prefill = await pods.add("prefill", queue_depth=9)
    await pods.add("decode", queue_depth=4)
    await eventually(lambda: _assert_equal(pool_status(cluster, "prefill").get("queueDepth"), 9))

    await patch_spec(cluster, {"autoscaling": {"mode": "off"}})
    # kopf records the spec it handled last; from then on the daemon's body has mode off.
    await eventually(lambda: _assert_handled_mode(cluster, "off"))
    # Once the daemon has stopped, a new queue depth is no longer reported.
    prefill.load(queue_depth=20)

    with pytest.raises(AssertionError):
        await eventually(
            lambda: _assert_equal(pool_status(cluster, "prefill").get("queueDepth"), 20),
            timeout=4.0,
        )
    assert live(cluster, DEPLOYMENTS, f"{NAME}-prefill")["spec"]["replicas"] == 1


def _assert_equal(actual, expected) -> None:
    assert actual == expected


def _assert_handled_mode(cluster, mode: str) -> None:
    annotations = live(cluster, CR_RESOURCE, NAME)["metadata"].get("annotations") or {}
    handled = json.loads(annotations.get(f"{c.GROUP}/last-handled-configuration", "{}"))
    assert (handled.get("spec") or {}).get("autoscaling", {}).get("mode") == mode
