"""Compare a desired child manifest with the live object and plan the repair.

Pure functions, called by the reconcile logic. The operator owns these fields
of each child: every label and annotation it sets, the ownerReferences, and
each top-level field under `spec` that the builders set. A live object matches
when each owned value is contained in the live value: keys that the API server
or another controller adds (defaults such as `imagePullPolicy`, a Service's
`clusterIP`, status) are ignored, so an unchanged child plans no write.

The plan is a JSON patch (RFC 6902) that replaces each differing owned field
whole, so keys that the new value lacks are removed. The pod template carries a
hash annotation of the pool's inputs, so any spec change of a pool changes the
template and replaces it. A hand edit that changes an owned value is replaced
too.

NOTE: a hand edit that only adds a key (an extra env var, a sidecar's field)
is not detected, because the comparison ignores keys the operator does not set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

# Fields that the API server rejects changes to. A child whose immutable field
# differs is deleted and created again.
IMMUTABLE_SPEC_FIELDS: Mapping[str, frozenset[str]] = {
    "Deployment": frozenset({"selector"}),
    "Service": frozenset({"clusterIP", "clusterIPs"}),
    "PodDisruptionBudget": frozenset(),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """The writes one child needs: a JSON patch, or a re-creation for an immutable field."""

    operations: tuple[dict[str, Any], ...] = ()
    # Owned paths that differ, e.g. "spec.template", for logs and events.
    changed: tuple[str, ...] = ()
    # Immutable paths that differ; non-empty means delete and create again.
    recreate: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.operations and not self.recreate


def _pointer(*parts: str) -> str:
    """Return the RFC 6901 JSON pointer of the path `parts`."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _is_zero(value: Any) -> bool:
    # The API server omits empty and zero values of optional fields
    # (Go's omitempty), so a desired zero value matches an absent key.
    return value is None or value is False or value == 0 or value == "" or value in ({}, [])


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, InvalidOperation):
        return None


def _scalar_equal(desired: Any, live: Any) -> bool:
    # Python has True == 1; JSON booleans and numbers are different values.
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if desired == live:
        return True
    # Ports and quantities come back as ints or in canonical form ("1Gi" for
    # "1024Mi"), so compare scalars of different spelling by value.
    if isinstance(desired, str | int | float) and isinstance(live, str | int | float):
        if str(desired) == str(live):
            return True
        left, right = _quantity(desired), _quantity(live)
        return left is not None and left == right
    return False


def contains(live: Any, desired: Any) -> bool:
    """Return whether `live` contains every value of `desired`, ignoring keys only `live` has.

    Lists must have the same length and match item by item, because the
    operator owns whole lists (containers, ports, tolerations).
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return live is None and all(_is_zero(value) for value in desired.values())
        for key, value in desired.items():
            if key not in live or live[key] is None:
                if not _is_zero(value):
                    return False
            elif not contains(live[key], value):
                return False
        return True
    if isinstance(desired, list):
        if live is None:
            return not desired
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(item_live, item) for item_live, item in zip(live, desired, strict=True))
    if live is None:
        return _is_zero(desired)
    return _scalar_equal(desired, live)


def _plan_map(
    desired: Mapping[str, Any], live: Mapping[str, Any], key: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Plan per-key writes of a metadata map (labels, annotations) that others also write."""
    wanted = desired.get(key) or {}
    present = live.get(key)
    if not wanted:
        return [], []
    if not isinstance(present, Mapping):
        return [{"op": "add", "path": _pointer("metadata", key), "value": dict(wanted)}], [
            f"metadata.{key}"
        ]
    operations = []
    changed = []
    for name, value in wanted.items():
        if present.get(name) != value:
            operations.append(
                {"op": "add", "path": _pointer("metadata", key, name), "value": value}
            )
            changed.append(f"metadata.{key}[{name}]")
    return operations, changed


def plan(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    *,
    skip_spec_fields: frozenset[str] = frozenset(),
) -> Plan:
    """Plan the writes that make `live` carry every owned value of `desired`.

    `skip_spec_fields` names top-level spec fields that another controller
    owns on this child (`replicas` when an autoscaler sets it).
    """
    kind = str(desired.get("kind"))
    desired_meta = desired.get("metadata") or {}
    live_meta = live.get("metadata") or {}
    operations: list[dict[str, Any]] = []
    changed: list[str] = []

    # 1. Labels and annotations, key by key: others may add their own.
    for key in ("labels", "annotations"):
        key_operations, key_changed = _plan_map(desired_meta, live_meta, key)
        operations += key_operations
        changed += key_changed

    # 2. Owner references as a whole list: they tie the child to the CR.
    owners = desired_meta.get("ownerReferences")
    if owners and not contains(live_meta.get("ownerReferences"), owners):
        operations.append(
            {"op": "add", "path": _pointer("metadata", "ownerReferences"), "value": owners}
        )
        changed.append("metadata.ownerReferences")

    # 3. Each top-level spec field whole; immutable ones force a re-creation.
    desired_spec = desired.get("spec") or {}
    live_spec = live.get("spec")
    recreate: list[str] = []
    if not isinstance(live_spec, Mapping):
        operations.append({"op": "add", "path": _pointer("spec"), "value": dict(desired_spec)})
        changed.append("spec")
        live_spec = None
    immutable = IMMUTABLE_SPEC_FIELDS.get(kind, frozenset())
    for field, value in desired_spec.items() if live_spec is not None else ():
        if field in skip_spec_fields or contains(live_spec.get(field), value):
            continue
        if field in immutable:
            recreate.append(f"spec.{field}")
            continue
        operations.append({"op": "add", "path": _pointer("spec", field), "value": value})
        changed.append(f"spec.{field}")

    return Plan(operations=tuple(operations), changed=tuple(changed), recreate=tuple(recreate))
