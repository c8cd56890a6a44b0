"""status: conditions from child Deployments, transition times and minimal patches."""

from __future__ import annotations

from disagg_operator import constants as c
from disagg_operator import status

BODY = {"metadata": {"name": "demo", "namespace": "ns1", "generation": 4}}


def deployment(desired: int, ready: int, *, updated: int | None = None) -> dict:
    updated = ready if updated is None else updated
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 2,
            "replicas": desired,
            "readyReplicas": ready,
            "updatedReplicas": updated,
        },
    }


def by_type(conditions: list[status.Condition]) -> dict[str, status.Condition]:
    return {condition.type: condition for condition in conditions}


def test_all_ready_is_available_and_settled():
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(1, 1), "decode": deployment(2, 2), "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_AVAILABLE].status == c.CONDITION_TRUE
    assert found[c.CONDITION_PROGRESSING].status == c.CONDITION_FALSE
    assert found[c.CONDITION_DEGRADED].status == c.CONDITION_FALSE


def test_no_ready_decode_is_unavailable():
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(1, 1), "decode": deployment(2, 0), "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_AVAILABLE].status == c.CONDITION_FALSE
    assert "decode" in found[c.CONDITION_AVAILABLE].message


def test_no_ready_prefill_is_degraded_not_unavailable():
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(1, 0), "decode": deployment(2, 2), "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_AVAILABLE].status == c.CONDITION_TRUE
    assert found[c.CONDITION_DEGRADED].status == c.CONDITION_TRUE
    assert "local prefill" in found[c.CONDITION_DEGRADED].message


def test_prefill_at_zero_is_not_degraded():
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(0, 0), "decode": deployment(2, 2), "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_DEGRADED].status == c.CONDITION_FALSE


def test_partial_update_is_progressing():
    found = by_type(
        status.conditions_for_children(
            {
                "prefill": deployment(1, 1),
                "decode": deployment(2, 2, updated=1),
                "router": deployment(1, 1),
            }
        )
    )

    assert found[c.CONDITION_PROGRESSING].status == c.CONDITION_TRUE
    assert "decode has 1 of 2 replicas updated" in found[c.CONDITION_PROGRESSING].message


def test_stalled_rollout_is_degraded():
    stalled = deployment(2, 2)
    stalled["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(1, 1), "decode": stalled, "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_DEGRADED].status == c.CONDITION_TRUE
    assert found[c.CONDITION_DEGRADED].message.startswith("decode:")


def test_transition_time_kept_when_status_holds():
    conditions = status.conditions_for_invalid_spec("spec.image: missing")
    first = status.compute(BODY, {}, conditions, router_port=8000, now="2026-01-01T00:00:00Z")
    body = dict(BODY, status=first)

    conditions = status.conditions_for_invalid_spec("spec.image: still missing")
    second = status.compute(body, {}, conditions, router_port=8000, now="2026-01-02T00:00:00Z")

    assert [cond["lastTransitionTime"] for cond in second["conditions"]] == [
        "2026-01-01T00:00:00Z"
    ] * 3
    assert second["conditions"][0]["message"] == "spec.image: still missing"


def test_transition_time_moves_when_status_flips():
    conditions = status.conditions_for_invalid_spec("spec.image: missing")
    first = status.compute(BODY, {}, conditions, router_port=8000, now="2026-01-01T00:00:00Z")
    body = dict(BODY, status=first)

    conditions = status.conditions_for_children(
        {"decode": deployment(1, 1), "router": deployment(1, 1)}
    )
    second = status.compute(body, {}, conditions, router_port=8000, now="2026-01-02T00:00:00Z")

    available = second["conditions"][0]
    assert available["status"] == c.CONDITION_TRUE
    assert available["lastTransitionTime"] == "2026-01-02T00:00:00Z"


def test_compute_reports_generation_pools_and_endpoint():
    computed = status.compute(
        BODY, {"decode": deployment(2, 1)}, [], router_port=8000, now="2026-01-01T00:00:00Z"
    )

    assert computed["observedGeneration"] == 4
    assert computed["decode"] == {"replicas": 2, "readyReplicas": 1, "desiredReplicas": 2}
    assert computed["router"] == {"replicas": 0, "readyReplicas": 0}
    assert computed["endpoint"] == "http://demo-router.ns1.svc:8000"


def test_merge_patch_none_when_equal():
    wanted = {"observedGeneration": 4, "decode": {"readyReplicas": 1}}

    assert status.merge_patch(wanted, wanted) is None


def test_merge_patch_keeps_autoscaler_fields():
    live = {"decode": {"readyReplicas": 1, "queueDepth": 7}}

    patch = status.merge_patch(live, {"decode": {"readyReplicas": 2}})

    assert patch == {"decode": {"readyReplicas": 2}}


STARTING = {"prefill": deployment(1, 0), "decode": deployment(2, 0), "router": deployment(1, 0)}


def test_starting_is_not_degraded():
    degraded = by_type(status.conditions_for_children(STARTING))[c.CONDITION_DEGRADED]

    assert (degraded.status, degraded.reason) == (c.CONDITION_FALSE, c.REASON_AS_EXPECTED)


def test_starting_degraded_message_names_rollout():
    degraded = by_type(status.conditions_for_children(STARTING))[c.CONDITION_DEGRADED]

    assert degraded.message == "no failure so far; the rollout is in progress (see Progressing)"


def test_starting_unavailable_says_pods_starting():
    available = by_type(status.conditions_for_children(STARTING))[c.CONDITION_AVAILABLE]

    assert available.reason == c.REASON_PODS_NOT_READY
    assert available.message.endswith("router and decode pools yet; their pods are starting")


def test_starting_is_progressing():
    progressing = by_type(status.conditions_for_children(STARTING))[c.CONDITION_PROGRESSING]

    assert (progressing.status, progressing.reason) == (c.CONDITION_TRUE, c.REASON_ROLLING_OUT)


def test_settled_degraded_reason_as_expected():
    found = by_type(
        status.conditions_for_children(
            {"prefill": deployment(1, 1), "decode": deployment(2, 2), "router": deployment(1, 1)}
        )
    )

    assert found[c.CONDITION_DEGRADED].reason == c.REASON_AS_EXPECTED


def test_no_router_service_means_no_endpoint():
    computed = status.compute(BODY, {}, [], router_port=None, now="2026-01-01T00:00:00Z")

    assert computed["endpoint"] is None


def test_endpoint_removed_when_router_service_gone():
    live = {"endpoint": "http://demo-router.ns1.svc:8000"}

    assert status.merge_patch(live, {"endpoint": None}) == {"endpoint": None}


def test_absent_endpoint_not_patched():
    assert status.merge_patch({}, {"endpoint": None}) is None
