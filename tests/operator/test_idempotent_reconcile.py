"""A reconcile with nothing changed writes nothing; a restarted operator converges."""

from __future__ import annotations

from disagg_operator import constants as c
from disagg_operator.builders import build_children
from disagg_operator.handlers import HandlerOptions
from runtime_support import (
    DEPLOYMENTS,
    NAME,
    NAMESPACE,
    OperatorThread,
    apply,
    child_names,
    custom_resource,
    live,
    reconcile_now,
    requests_to,
    wait_converged,
    writes,
)


async def test_second_reconcile_sends_no_write(cluster, operator):
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    await reconcile_now(operator)  # settles the status after the last child event
    since = len(list(cluster))

    outcome = await reconcile_now(operator)

    assert outcome.writes == 0
    assert writes(cluster, since) == []


async def test_restarted_operator_sends_no_write(cluster):
    options = HandlerOptions(resync_seconds=None, daemon_cancellation_seconds=1.0, autoscaler=False)
    first = OperatorThread(options, namespaces=[NAMESPACE])
    await first.start()
    await apply(cluster, custom_resource())
    await wait_converged(cluster)
    await reconcile_now(first)
    await first.stop()
    since = len(list(cluster))

    second = OperatorThread(options, namespaces=[NAMESPACE])
    await second.start()
    try:
        # The resume handler and the listing of every child each reconcile;
        # waiting for one explicit reconcile orders the check after them.
        await reconcile_now(second)
        assert writes(cluster, since) == []
    finally:
        await second.stop()


async def test_partial_children_converge(cluster):
    # A previous operator created the prefill pool's children, then died.
    body = custom_resource()
    for manifest in build_children(body):
        if manifest["metadata"]["labels"][c.LABEL_ROLE] != c.ROLE_PREFILL:
            continue
        group_version = manifest["apiVersion"]
        root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        plural = {"Deployment": "deployments", "Service": "services"}.get(
            manifest["kind"], "poddisruptionbudgets"
        )
        response = await cluster.post(f"{root}/namespaces/{NAMESPACE}/{plural}", json=manifest)
        assert response.status == 200
    await apply(cluster, body)
    since = len(list(cluster))

    options = HandlerOptions(resync_seconds=None, daemon_cancellation_seconds=1.0, autoscaler=False)
    runner = OperatorThread(options, namespaces=[NAMESPACE])
    await runner.start()
    try:
        await wait_converged(cluster)
        done = writes(cluster, since)
        # The prefill children were equal to the desired ones: left as they were.
        assert requests_to(done, DEPLOYMENTS, f"{NAME}-prefill") == []
        for resource, names in child_names().items():
            for name in names:
                creates = [r for r in requests_to(done, resource, name) if r.method == "POST"]
                assert len(creates) <= 1, f"{resource} {name} created {len(creates)} times"
    finally:
        await runner.stop()


async def test_second_resource_gets_own_children(cluster, operator):
    await apply(cluster, custom_resource())
    await apply(cluster, custom_resource(name="other", uid="uid-other"))

    await wait_converged(cluster)
    await wait_converged(cluster, "other")
    owners = live(cluster, DEPLOYMENTS, "other-router")["metadata"]["ownerReferences"]
    assert [owner["uid"] for owner in owners] == ["uid-other"]
