"""Metadata shared by every child: owner, labels, selectors and the template hash.

Pure functions, called by the other builder modules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import constants as c


@dataclass(frozen=True)
class Owner:
    """The DisaggregatedDeployment that owns the children: its identity only."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        """Read name, namespace and uid from a custom resource body.

        Raises ValueError naming the missing field: an owner reference needs
        the uid, which the API server assigns on create.
        """
        metadata = body.get("metadata") or {}
        values = {key: metadata.get(key) for key in ("name", "namespace", "uid")}
        for key, value in values.items():
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"metadata.{key} of the {c.KIND} is missing; build children from the "
                    "body that the API server returned"
                )
        return cls(**values)


def labels(owner: Owner, role: str) -> dict[str, str]:
    """Return the labels of every child object and pod of `role`."""
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: owner.name,
        c.LABEL_COMPONENT: role,
        c.LABEL_MANAGED_BY: c.MANAGER_NAME,
        c.LABEL_DEPLOYMENT: owner.name,
        c.LABEL_ROLE: role,
    }


def selector(owner: Owner, role: str) -> dict[str, str]:
    """Return the pod selector of a role: instance and role.

    A Deployment's selector is immutable, so it contains only labels whose
    values never change for the life of the custom resource.
    """
    return {c.LABEL_INSTANCE: owner.name, c.LABEL_ROLE: role}


def owner_reference(owner: Owner) -> dict[str, Any]:
    """Return the owner reference that lets garbage collection delete the children."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(owner: Owner, role: str, annotations: Mapping[str, str] | None = None) -> dict:
    """Return the metadata of the child of `role` (named NAME-ROLE)."""
    meta: dict[str, Any] = {
        "name": c.child_name(owner.name, role),
        "namespace": owner.namespace,
        "labels": labels(owner, role),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    meta["ownerReferences"] = [owner_reference(owner)]
    return meta


def template_hash(template: Mapping[str, Any]) -> str:
    """Return a short, stable hash of a pod template (canonical JSON, SHA-256).

    Equal templates give equal hashes across processes and Python versions,
    so the apply layer can compare it with the annotation of the live object.
    """
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
