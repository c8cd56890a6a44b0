"""PodDisruptionBudgets of the worker pools."""

from __future__ import annotations

from typing import Any

from .. import constants as c
from .meta import Owner, object_meta, selector


def build_pdb(owner: Owner, role: str) -> dict[str, Any]:
    """Return the PodDisruptionBudget NAME-ROLE of a worker pool.

    A node drain evicts at most one replica of the pool at a time, so the
    others keep serving while it drains. maxUnavailable (not minAvailable)
    keeps a pool scaled to zero or one replica drainable. With
    unhealthyPodEvictionPolicy AlwaysAllow, running pods that are not ready
    are evicted whatever the budget, so a crash-looping replica does not
    block a drain.
    """
    if role not in c.WORKER_ROLES:
        raise ValueError(f"unknown worker role {role!r}: expected prefill or decode")
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(owner, role),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(owner, role)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
