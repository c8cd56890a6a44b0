"""Reconcile one DisaggregatedDeployment: desired children against live ones.

Called by the kopf handlers (create, update, resume, the periodic resync and
the watches of the children). The steps live in `reconcile_once`. `Reconciler`
runs them one at a time per resource, because a create handler and the watch
events of the children it creates arrive together.

Writes happen only where the live state differs from the desired one, so a
reconcile of an unchanged resource sends no write request at all. An invalid
spec, or a child name taken by an object this resource does not own, touches
no child: the resource gets Available=False with reason InvalidSpec and a
Warning event instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import constants as c
from . import drift, kube, status
from . import spec as spec_module
from .kube import Kube, Resource

logger = logging.getLogger(__name__)

# Seconds before kopf retries after an API error, by HTTP status.
RETRY_DELAY_SECONDS = 10.0
RETRY_DELAY_RACE_SECONDS = 1.0
RETRY_DELAY_FORBIDDEN_SECONDS = 60.0


class ChildConflictError(Exception):
    """A child name is taken by an object that this resource does not own."""


@dataclasses.dataclass
class Outcome:
    """The writes of one reconcile and the spec problems it found."""

    created: list[str] = dataclasses.field(default_factory=list)
    updated: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    problems: list[spec_module.SpecProblem] = dataclasses.field(default_factory=list)
    status_written: bool = False

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.updated) + len(self.deleted) + self.status_written


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _describe(manifest: Mapping[str, Any]) -> str:
    meta = _meta(manifest)
    return f"{manifest.get('kind')} {meta.get('namespace')}/{meta.get('name')}"


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    return any(
        reference.get("uid") == uid and reference.get("controller")
        for reference in _meta(obj).get("ownerReferences") or ()
    )


def _role(obj: Mapping[str, Any]) -> str | None:
    return (_meta(obj).get("labels") or {}).get(c.LABEL_ROLE)


def _deployments_by_role(
    children: Mapping[tuple[str, str], Mapping[str, Any]],
) -> dict[str | None, Mapping[str, Any]]:
    return {_role(obj): obj for (kind, _), obj in children.items() if kind == kube.DEPLOYMENTS.kind}


def _router_service_port(
    children: Mapping[tuple[str, str], Mapping[str, Any]], name: str
) -> int | None:
    """Return the HTTP port of the router Service among `children`, None when it is absent."""
    service = children.get((kube.SERVICES.kind, c.router_name(name)))
    for port in ((service or {}).get("spec") or {}).get("ports") or ():
        if port.get("name") == c.PORT_NAME_HTTP and port.get("port") is not None:
            return int(port["port"])
    return None


def _child_selector(name: str) -> dict[str, str]:
    return {c.LABEL_DEPLOYMENT: name, c.LABEL_MANAGED_BY: c.MANAGER_NAME}


def replica_overrides(
    parsed: spec_module.DeploymentSpec,
    live_status: Mapping[str, Any] | None,
    live_deployments: Mapping[str, Mapping[str, Any]],
) -> dict[str, int]:
    """Return the replicas of each worker pool that the spec must not overwrite.

    With autoscaling on (builtin or external), another controller owns the
    replicas of an existing worker Deployment, so its live value is kept. A
    Deployment that has to be created again under the builtin autoscaler
    starts at the autoscaler's last desired replicas, within min and max.
    """
    if parsed.autoscaling.mode == c.AUTOSCALING_OFF:
        return {}
    overrides: dict[str, int] = {}
    for role in c.WORKER_ROLES:
        deployment = live_deployments.get(role)
        if deployment is not None:
            replicas = (deployment.get("spec") or {}).get("replicas")
            if replicas is not None:
                overrides[role] = int(replicas)
            continue
        if parsed.autoscaling.mode != c.AUTOSCALING_BUILTIN:
            continue
        last = ((live_status or {}).get(role) or {}).get("desiredReplicas")
        if isinstance(last, int):
            pool = parsed.pool(role)
            overrides[role] = max(pool.min_replicas, min(pool.max_replicas, last))
    return overrides


def _retry_error(error: kube.ApiError) -> kopf.TemporaryError | kopf.PermanentError:
    """Map an API error to kopf's retry semantics."""
    if error.status in (400, 422):
        # The server rejected a manifest that the builders made; retrying sends
        # the same one, so wait for the next spec change.
        return kopf.PermanentError(str(error))
    if error.status in (401, 403):
        return kopf.TemporaryError(
            f"{error}; check the operator's RBAC rules", delay=RETRY_DELAY_FORBIDDEN_SECONDS
        )
    if error.status in (404, 409):
        return kopf.TemporaryError(str(error), delay=RETRY_DELAY_RACE_SECONDS)
    return kopf.TemporaryError(str(error), delay=RETRY_DELAY_SECONDS)


class _Run:
    """State of one reconcile pass of one resource."""

    def __init__(self, api: Kube, body: Mapping[str, Any], log: logging.Logger | Any) -> None:
        self.api = api
        self.body = body
        self.log = log
        meta = _meta(body)
        self.name: str = meta.get("name", "")
        self.namespace: str = meta.get("namespace", "")
        self.uid: str | None = meta.get("uid")
        self.outcome = Outcome()
        # Names of worker Deployments whose replicas an autoscaler owns.
        self.unmanaged_replicas: frozenset[str] = frozenset()

    async def event(self, event_type: str, reason: str, message: str) -> None:
        await self.api.post_event(self.body, event_type=event_type, reason=reason, message=message)

    async def list_children(self) -> dict[tuple[str, str], dict[str, Any]]:
        live: dict[tuple[str, str], dict[str, Any]] = {}
        for resource in kube.CHILD_RESOURCES:
            items = await self.api.list(resource, self.namespace, _child_selector(self.name))
            for item in items:
                live[(resource.kind, _meta(item).get("name", ""))] = item
        return live

    async def find_conflicts(
        self, desired: list[dict[str, Any]], live: dict[tuple[str, str], dict[str, Any]]
    ) -> list[spec_module.SpecProblem]:
        """Look up desired children absent from the labelled list; adopt or reject each.

        An object with the child's name that this resource controls (its labels
        were edited by hand) joins `live`; any other object is a conflict.
        """
        problems = []
        for manifest in desired:
            key = (manifest["kind"], _meta(manifest)["name"])
            if key in live:
                continue
            resource = kube.resource_of(manifest)
            existing = await self.api.get(resource, self.namespace, key[1])
            if existing is None:
                continue
            if _owned_by(existing, self.uid):
                live[key] = existing
                continue
            problems.append(
                spec_module.SpecProblem(
                    "metadata.name",
                    f"{_describe(manifest)} already exists and is not owned by this "
                    f"{c.KIND}; delete that object or rename the {c.KIND}",
                )
            )
        return problems

    async def create(self, resource: Resource, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a child; an existing one that this resource owns is patched instead.

        A create that fails with 409 happens after a restart mid-reconcile or a
        race with a second reconcile: the child exists, so it converges by patch.
        """
        try:
            created = await self.api.create(resource, self.namespace, manifest)
        except kube.ApiError as error:
            if error.status != 409:
                raise
            existing = await self.api.get(resource, self.namespace, _meta(manifest)["name"])
            if existing is None:
                raise
            if not _owned_by(existing, self.uid):
                raise ChildConflictError(
                    f"{_describe(manifest)} already exists and is not owned by this {c.KIND}"
                ) from error
            self.log.info("child exists already child=%s; patching it", _describe(manifest))
            return await self.update(resource, manifest, existing)
        self.outcome.created.append(_describe(manifest))
        self.log.info("created child=%s", _describe(manifest))
        await self.event(c.EVENT_NORMAL, c.REASON_CREATED, f"Created {_describe(manifest)}")
        return created

    async def update(
        self, resource: Resource, manifest: dict[str, Any], live: dict[str, Any]
    ) -> dict[str, Any]:
        skip: frozenset[str] = frozenset()
        if resource is kube.DEPLOYMENTS and _meta(manifest).get("name") in self.unmanaged_replicas:
            skip = frozenset({"replicas"})
        planned = drift.plan(manifest, live, skip_spec_fields=skip)
        if planned.empty:
            return live

        name = _meta(manifest)["name"]
        if planned.recreate:
            # Immutable fields differ: the only way to change them is a new object.
            fields = ", ".join(planned.recreate)
            self.log.info(
                "re-creating child=%s because %s is immutable", _describe(manifest), fields
            )
            await self.api.delete(resource, self.namespace, name)
            created = await self.api.create(resource, self.namespace, manifest)
            self.outcome.updated.append(_describe(manifest))
            await self.event(
                c.EVENT_NORMAL,
                c.REASON_UPDATED,
                f"Re-created {_describe(manifest)} because {fields} cannot change in place",
            )
            return created

        fields = ", ".join(planned.changed)
        patched = await self.api.patch(resource, self.namespace, name, list(planned.operations))
        self.outcome.updated.append(_describe(manifest))
        self.log.info("updated child=%s fields=%s", _describe(manifest), fields)
        await self.event(
            c.EVENT_NORMAL, c.REASON_UPDATED, f"Updated {_describe(manifest)}: {fields}"
        )
        return patched

    async def prune(
        self, desired: list[dict[str, Any]], live: dict[tuple[str, str], dict[str, Any]]
    ) -> None:
        """Delete children this resource owns that the builders no longer produce."""
        wanted = {(m["kind"], _meta(m)["name"]) for m in desired}
        for key, obj in live.items():
            if key in wanted or not _owned_by(obj, self.uid):
                continue
            resource = next(r for r in kube.CHILD_RESOURCES if r.kind == key[0])
            description = f"{key[0]} {self.namespace}/{key[1]}"
            if await self.api.delete(resource, self.namespace, key[1]):
                self.outcome.deleted.append(description)
                self.log.info("deleted child=%s: no longer desired", description)
                await self.event(c.EVENT_NORMAL, c.REASON_DELETED, f"Deleted {description}")

    async def write_status(
        self,
        children: Mapping[tuple[str, str], Mapping[str, Any]],
        conditions: list[status.Condition],
    ) -> None:
        """Write the status of `children` (live or just applied), keyed by (kind, name)."""
        deployments = _deployments_by_role(children)
        router_port = _router_service_port(children, self.name)
        wanted = status.compute(self.body, deployments, conditions, router_port=router_port)
        patch = status.merge_patch(self.body.get("status"), wanted)
        if patch is None:
            return
        await self.api.patch(
            kube.DISAGGREGATED_DEPLOYMENTS,
            self.namespace,
            self.name,
            {"status": patch},
            subresource="status",
        )
        self.outcome.status_written = True

    async def report_invalid(
        self,
        problems: list[spec_module.SpecProblem],
        live: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        message = "; ".join(str(problem) for problem in problems)
        self.outcome.problems = list(problems)
        previous = status.condition(self.body.get("status"), c.CONDITION_AVAILABLE) or {}
        self.log.warning("invalid spec, children left untouched: %s", message)
        await self.write_status(live, status.conditions_for_invalid_spec(message))
        # One event per distinct problem, not one per resync.
        if previous.get("reason") != c.REASON_INVALID_SPEC or previous.get("message") != message:
            await self.event(c.EVENT_WARNING, c.REASON_INVALID_SPEC, message)

    async def report_error(
        self,
        error: Exception,
        live: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        """Record a failed reconcile as Degraded=True and a Warning event, best effort."""
        message = str(error)
        previous = status.condition(self.body.get("status"), c.CONDITION_DEGRADED) or {}
        conditions = status.conditions_for_children(_deployments_by_role(live), error=message)
        try:
            await self.write_status(live, conditions)
        except kube.ApiError as status_error:
            self.log.warning("failed to record the reconcile error in status: %s", status_error)
        if previous.get("reason") != c.REASON_RECONCILE_ERROR or previous.get("message") != message:
            await self.event(c.EVENT_WARNING, c.REASON_RECONCILE_ERROR, message)


async def reconcile_once(
    api: Kube, body: Mapping[str, Any], log: logging.Logger | Any = logger
) -> Outcome:
    """Bring the children and status of one resource in line with its spec.

    Steps:
    1. parse and validate the spec;
    2. list the live children (by label) and look up missing ones by name;
    3. on an invalid spec or a name conflict: status InvalidSpec, event, stop;
    4. build the desired children and create, patch or re-create each that differs;
    5. delete owned children that are no longer desired;
    6. write the status if it changed.

    Raises kopf.TemporaryError (retry after a delay) or kopf.PermanentError
    (wait for the next change) when the API server rejects a request.
    """
    run = _Run(api, body, log)
    parsed, problems = spec_module.load(body)

    live: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        live = await run.list_children()
        if problems or parsed is None:
            await run.report_invalid(problems, live)
            return run.outcome

        live_deployments = _deployments_by_role(live)
        overrides = replica_overrides(parsed, body.get("status"), live_deployments)
        from .builders import build_children

        desired = build_children(body, replicas=overrides)
        conflicts = await run.find_conflicts(desired, live)
        if conflicts:
            await run.report_invalid(conflicts, live)
            return run.outcome

        if parsed.autoscaling.mode != c.AUTOSCALING_OFF:
            run.unmanaged_replicas = frozenset(
                c.child_name(run.name, role) for role in c.WORKER_ROLES
            )
        applied: dict[tuple[str, str], dict[str, Any]] = {}
        for manifest in desired:
            resource = kube.resource_of(manifest)
            key = (manifest["kind"], _meta(manifest)["name"])
            if key in live:
                applied[key] = await run.update(resource, manifest, live[key])
            else:
                applied[key] = await run.create(resource, manifest)
        await run.prune(desired, live)
    except kube.ApiError as error:
        log.warning("reconcile failed: %s", error)
        await run.report_error(error, live)
        raise _retry_error(error) from error
    except ChildConflictError as error:
        # A conflicting object appeared between the lookup and the create.
        log.warning("reconcile failed: %s", error)
        await run.report_error(error, live)
        raise kopf.TemporaryError(str(error), delay=RETRY_DELAY_SECONDS) from error

    try:
        await run.write_status(
            applied, status.conditions_for_children(_deployments_by_role(applied))
        )
    except kube.ApiError as error:
        log.warning("failed to write status: %s", error)
        raise _retry_error(error) from error
    if run.outcome.writes:
        log.info(
            "reconciled created=%d updated=%d deleted=%d status_written=%s",
            len(run.outcome.created),
            len(run.outcome.updated),
            len(run.outcome.deleted),
            run.outcome.status_written,
        )
    return run.outcome


class Reconciler:
    """Runs reconciles one at a time per resource and merges queued requests.

    A burst of child watch events for one resource runs at most one reconcile
    after the current one. A request that finds another one already waiting
    returns at once, because the waiting one reads the resource after the
    current one finishes, so it covers every change the burst reported.
    """

    def __init__(self, api: Kube) -> None:
        self.api = api
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._waiting: set[tuple[str, str]] = set()

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def reconcile(
        self, body: Mapping[str, Any], log: logging.Logger | Any = logger
    ) -> Outcome:
        """Reconcile `body` after any reconcile of the same resource in progress.

        The body is read again first when another reconcile ran meanwhile,
        because that one may have written the status this one compares with.
        """
        meta = _meta(body)
        key = (meta.get("namespace", ""), meta.get("name", ""))
        lock = self._lock(key)
        waited = lock.locked()
        async with lock:
            if waited:
                fresh = await self.api.get(kube.DISAGGREGATED_DEPLOYMENTS, key[0], key[1])
                if fresh is None:
                    return Outcome()
                body = fresh
            return await reconcile_once(self.api, body, log)

    async def reconcile_named(
        self, namespace: str, name: str, *, cause: str, log: logging.Logger | Any = logger
    ) -> Outcome | None:
        """Read the resource and reconcile it, unless a queued reconcile will do it.

        Returns None when the request was merged into a queued one or the
        resource no longer exists.
        """
        key = (namespace, name)
        if key in self._waiting:
            return None
        self._waiting.add(key)
        try:
            async with self._lock(key):
                self._waiting.discard(key)
                body = await self.api.get(kube.DISAGGREGATED_DEPLOYMENTS, namespace, name)
                if body is None:
                    log.debug(
                        "resource is gone namespace=%s name=%s cause=%s", namespace, name, cause
                    )
                    self.forget(namespace, name)
                    return None
                log.debug("reconciling namespace=%s name=%s cause=%s", namespace, name, cause)
                return await reconcile_once(self.api, body, log)
        finally:
            self._waiting.discard(key)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted resource."""
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del self._locks[(namespace, name)]
