"""Status of a DisaggregatedDeployment: conditions and per-pool replica counts.

Pure functions, called by the reconcile logic after it applied the children.
`compute` derives the status fields that the operator owns from the child
Deployments. `merge_patch` compares them with the live status and returns the
JSON merge patch for the status subresource, or None when nothing changed. So
a reconcile of an unchanged resource writes nothing.

Fields the autoscaler writes (`queueDepth`, `lastScaleTime`, `lastScaleReason`)
are not computed here, and a merge patch leaves them in place.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from . import constants as c

# The rollout of a Deployment stalled: its controller sets this reason on the
# Progressing condition after spec.progressDeadlineSeconds.
DEPLOYMENT_PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint(name: str, namespace: str, port: int) -> str:
    """Return the in-cluster URL of the router Service."""
    return f"http://{c.router_name(name)}.{namespace}.svc:{port}"


def _counts(deployment: Mapping[str, Any] | None) -> tuple[int, int, int, int]:
    """Return (desired, current, ready, updated) replicas of a Deployment; zeros if absent."""
    if deployment is None:
        return 0, 0, 0, 0
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = spec.get("replicas")
    return (
        1 if desired is None else int(desired),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        int(status.get("updatedReplicas") or 0),
    )


def pool_status(role: str, deployment: Mapping[str, Any] | None) -> dict[str, int]:
    """Return the replica counts of one pool, as the CRD's status.<role> stores them."""
    desired, current, ready, _ = _counts(deployment)
    counts = {"replicas": current, "readyReplicas": ready}
    if role in c.WORKER_ROLES:
        counts["desiredReplicas"] = desired
    return counts


def _rolling_out(role: str, deployment: Mapping[str, Any] | None) -> str | None:
    """Return why a pool is still rolling out, or None when it is rolled out."""
    if deployment is None:
        return f"{role} Deployment does not exist yet"
    desired, current, ready, updated = _counts(deployment)
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = (deployment.get("status") or {}).get("observedGeneration")
    if generation is not None and (observed is None or int(observed) < int(generation)):
        return f"{role} Deployment generation {generation} is not observed yet"
    if updated < desired:
        return f"{role} has {updated} of {desired} replicas updated"
    if ready < desired:
        return f"{role} has {ready} of {desired} replicas ready"
    if current > desired:
        return f"{role} has {current - desired} old replicas terminating"
    return None


def _stalled(deployment: Mapping[str, Any] | None) -> str | None:
    """Return the message of a Deployment whose rollout exceeded its progress deadline."""
    for condition in (deployment or {}).get("status", {}).get("conditions") or ():
        if (
            condition.get("type") == "Progressing"
            and condition.get("reason") == DEPLOYMENT_PROGRESS_DEADLINE_EXCEEDED
        ):
            return str(condition.get("message") or DEPLOYMENT_PROGRESS_DEADLINE_EXCEEDED)
    return None


def conditions_for_children(
    deployments: Mapping[str, Mapping[str, Any] | None],
    error: str | None = None,
) -> list[Condition]:
    """Derive Available, Progressing and Degraded from the child Deployments by role.

    Available needs a ready router and a ready decode replica: without ready
    prefill replicas the router still serves every request with local prefill,
    which makes the resource Degraded rather than unavailable.
    """
    ready = {role: _counts(deployments.get(role))[2] for role in c.ROLES}
    desired = {role: _counts(deployments.get(role))[0] for role in c.ROLES}

    rolling = {role: why for role in c.ROLES if (why := _rolling_out(role, deployments.get(role)))}
    missing = [role for role in (c.ROLE_ROUTER, c.ROLE_DECODE) if ready[role] < 1]
    if missing:
        message = (
            "no ready replica in the "
            + " and ".join(missing)
            + " pool"
            + ("s" if len(missing) > 1 else "")
        )
        if all(role in rolling for role in missing):
            message += " yet; their pods are starting"
        available = Condition(
            c.CONDITION_AVAILABLE, c.CONDITION_FALSE, c.REASON_PODS_NOT_READY, message
        )
    else:
        available = Condition(
            c.CONDITION_AVAILABLE,
            c.CONDITION_TRUE,
            c.REASON_PODS_READY,
            f"router and decode pools have ready replicas ({ready[c.ROLE_ROUTER]} and "
            f"{ready[c.ROLE_DECODE]})",
        )

    if rolling:
        progressing = Condition(
            c.CONDITION_PROGRESSING,
            c.CONDITION_TRUE,
            c.REASON_ROLLING_OUT,
            "; ".join(rolling.values()),
        )
    else:
        progressing = Condition(
            c.CONDITION_PROGRESSING,
            c.CONDITION_FALSE,
            c.REASON_PODS_READY,
            "every pool has its desired replicas updated and ready",
        )

    problems = []
    for role in c.ROLES:
        stalled = _stalled(deployments.get(role))
        if stalled:
            problems.append(f"{role}: {stalled}")
    if desired[c.ROLE_PREFILL] > 0 and ready[c.ROLE_PREFILL] < 1 and not missing:
        problems.append("no ready prefill replica, so every request uses local prefill")
    if error is not None:
        degraded = Condition(
            c.CONDITION_DEGRADED, c.CONDITION_TRUE, c.REASON_RECONCILE_ERROR, error
        )
    elif problems:
        degraded = Condition(
            c.CONDITION_DEGRADED, c.CONDITION_TRUE, c.REASON_PODS_NOT_READY, "; ".join(problems)
        )
    elif rolling:
        degraded = Condition(
            c.CONDITION_DEGRADED,
            c.CONDITION_FALSE,
            c.REASON_AS_EXPECTED,
            "no failure so far; the rollout is in progress (see Progressing)",
        )
    else:
        degraded = Condition(
            c.CONDITION_DEGRADED,
            c.CONDITION_FALSE,
            c.REASON_AS_EXPECTED,
            "no failure; every pool has its desired replicas ready",
        )
    return [available, progressing, degraded]


def conditions_for_invalid_spec(message: str) -> list[Condition]:
    """Conditions of a resource whose spec is invalid: its children are left untouched."""
    return [
        Condition(c.CONDITION_AVAILABLE, c.CONDITION_FALSE, c.REASON_INVALID_SPEC, message),
        Condition(
            c.CONDITION_PROGRESSING,
            c.CONDITION_FALSE,
            c.REASON_INVALID_SPEC,
            "no change is rolled out until the spec is fixed",
        ),
        Condition(c.CONDITION_DEGRADED, c.CONDITION_TRUE, c.REASON_INVALID_SPEC, message),
    ]


def compute(
    body: Mapping[str, Any],
    deployments: Mapping[str, Mapping[str, Any] | None],
    conditions: Sequence[Condition],
    *,
    router_port: int | None,
    now: str | None = None,
) -> dict[str, Any]:
    """Return the status fields the operator owns, keeping unchanged transition times.

    `router_port` is the port of the existing router Service. It is None when
    there is no router Service, for example because an invalid spec created no
    children. The endpoint is then None, so a merge patch removes it.
    """
    meta = body.get("metadata") or {}
    live = body.get("status") or {}
    generation = meta.get("generation")
    previous = {
        condition.get("type"): condition
        for condition in live.get("conditions") or ()
        if isinstance(condition, Mapping)
    }
    timestamp = now or _now()

    rendered = []
    for condition in conditions:
        before = previous.get(condition.type) or {}
        # lastTransitionTime moves only when the status flips.
        if before.get("status") == condition.status and before.get("lastTransitionTime"):
            transition = before["lastTransitionTime"]
        else:
            transition = timestamp
        item: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": transition,
        }
        if generation is not None:
            item["observedGeneration"] = generation
        rendered.append(item)

    status: dict[str, Any] = {"conditions": rendered}
    if generation is not None:
        status["observedGeneration"] = generation
    for role in c.ROLES:
        status[role] = pool_status(role, deployments.get(role))
    status["endpoint"] = (
        endpoint(meta.get("name", ""), meta.get("namespace", ""), router_port)
        if router_port is not None
        else None
    )
    return status


def merge_patch(live_status: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> dict | None:
    """Return the JSON merge patch that writes `wanted` over `live_status`, or None if equal.

    Per-pool mappings are compared key by key, so keys that only the live
    status has (the autoscaler's) stay; conditions are written as a whole list.
    """
    live_status = live_status or {}
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        current = live_status.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            changed = {k: v for k, v in value.items() if current.get(k) != v}
            if changed:
                patch[key] = changed
        elif current != value:
            patch[key] = value
    return patch or None


def condition(status_body: Mapping[str, Any] | None, condition_type: str) -> Mapping | None:
    """Return the condition of `condition_type` from a status mapping, or None."""
    for item in (status_body or {}).get("conditions") or ():
        if isinstance(item, Mapping) and item.get("type") == condition_type:
            return item
    return None
