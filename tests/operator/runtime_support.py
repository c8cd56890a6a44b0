"""Helpers of the operator runtime tests: kmock as the API server, the operator in-process.

The `cluster` fixture (conftest.py) is kmock's Kubernetes emulator, served over
HTTP on 127.0.0.1, with the built-in resources and the DisaggregatedDeployment
resource registered for discovery, and KUBECONFIG pointing at it, so kopf and
the operator's `Kube` log in the standard way. The `operator` fixture runs kopf
with the operator's handlers in a thread with its own event loop
(`OperatorThread`): kopf cancels every task of its loop when it stops, so
sharing the test's loop would cancel the test's fixtures too.

kmock stores objects as sent and runs no controllers or garbage collection.
`ApiServerEmulator` adds what the operator relies on: a uid and
creationTimestamp on create, a generation that grows with each change of the
spec, and 422 for a JSON patch whose `test` fails. It keeps resourceVersion
as sent: kopf waits for the resourceVersion of its own patches in the watch
stream, and kmock replays every object when a watch starts, which confuses
that wait once versions change.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import attrs
import jsonpatch
import kmock
import kopf
from disagg_operator import constants as c
from disagg_operator.handlers import HandlerOptions, build_registry
from disagg_operator.kube import DISAGGREGATED_DEPLOYMENTS

NAMESPACE = "ns1"
NAME = "demo"
UID = "11111111-2222-3333-4444-555555555555"
CR_RESOURCE = f"{c.GROUP}/{c.VERSION}/{c.PLURAL}"
CR_PATH = f"/apis/{c.GROUP}/{c.VERSION}/namespaces/{NAMESPACE}/{c.PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
PDBS = "policy/v1/poddisruptionbudgets"
EVENTS = "v1/events"
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}

# Seconds a test waits for the operator to converge before it fails.
DEADLINE_SECONDS = 15.0

SPEC: dict[str, Any] = {
    "model": {"name": "SmolLM2-135M-Instruct", "source": "smollm2"},
    "image": "disagg-worker:0.1.0",
    "prefill": {
        "replicas": 1,
        "minReplicas": 1,
        "maxReplicas": 4,
        "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
    },
    "decode": {
        "replicas": 2,
        "minReplicas": 1,
        "maxReplicas": 4,
        "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
    },
    "router": {"replicas": 1, "port": 8000},
    "autoscaling": {"mode": "builtin"},
}


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata an API server assigns on each write."""

    async def _handle(self, request: Any) -> Any:
        # The request object must stay the same (kmock finds reactions by it),
        # so the stamps go into its parsed body in place.
        if request.resource is not None and request.data is not None:
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._stamp_create(request.data)
            elif request.action == kmock.action.UPDATE:
                self._check_tests(request)
                self._stamp_update(request)
        return await super()._handle(request)

    def _check_tests(self, request: Any) -> None:
        """Reject a JSON patch whose `test` operation fails with 422, as the API server does."""
        key = (request.resource, request.namespace, request.name)
        if not isinstance(request.data, list) or key not in self.objects:
            return
        try:
            jsonpatch.apply_patch(
                self.objects[key].raw, [op for op in request.data if op.get("op") == "test"]
            )
        except jsonpatch.JsonPatchTestFailed as error:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error)) from error

    def _stamp_create(self, data: dict[str, Any]) -> None:
        meta = data.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault(
            "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        meta.setdefault("resourceVersion", "1")

    def _stamp_update(self, request: Any) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        meta = self.objects[key].raw.get("metadata", {})
        stamp: dict[str, Any] = {}
        if isinstance(request.data, dict):
            spec_changed = "spec" in request.data
        else:
            spec_changed = any(op.get("path", "").startswith("/spec") for op in request.data)
        if spec_changed and request.subresource is None:
            stamp["generation"] = int(meta.get("generation") or 0) + 1
        if not stamp:
            return
        if isinstance(request.data, dict):
            request.data.setdefault("metadata", {}).update(stamp)
        else:
            request.data.extend(
                {"op": "add", "path": f"/metadata/{k}", "value": v} for k, v in stamp.items()
            )


def custom_resource(
    spec: dict[str, Any] | None = None, *, name: str = NAME, uid: str = UID, generation: int = 1
) -> dict[str, Any]:
    """Return a DisaggregatedDeployment body with the metadata an API server would assign."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "generation": generation,
            "resourceVersion": "1",
        },
        "spec": copy.deepcopy(spec if spec is not None else SPEC),
    }


def child_names(name: str = NAME) -> dict[str, set[str]]:
    """Return the names of every child, by kmock resource."""
    return {
        DEPLOYMENTS: {f"{name}-prefill", f"{name}-decode", f"{name}-router"},
        SERVICES: {f"{name}-prefill", f"{name}-decode", f"{name}-router"},
        PDBS: {f"{name}-prefill", f"{name}-decode"},
    }


def live(cluster: kmock.KubernetesEmulator, resource: str, name: str) -> dict[str, Any] | None:
    """Return the stored object, or None when absent or deleted."""
    # ObjectsArray.__contains__ of kmock 0.8 does not parse "group/version/plural" keys.
    key = (kmock.resource(resource), NAMESPACE, name)
    if key not in cluster.objects or cluster.objects[key].deleted:
        return None
    return copy.deepcopy(cluster.objects[key].raw)


def writes(cluster: kmock.KubernetesEmulator, since: int = 0) -> list[Any]:
    """Return the write requests to the operator's objects from request number `since` on.

    kopf's own bookkeeping on the custom resource (annotations and finalizers
    on the main resource) is left out: only children, events and the status
    subresource count.
    """
    result = []
    for request in list(cluster)[since:]:
        if str(request.method.value) not in WRITE_METHODS or request.resource is None:
            continue
        resource = request.resource
        is_child = resource.plural in ("deployments", "services", "poddisruptionbudgets", "events")
        is_status = resource.plural == c.PLURAL and request.subresource == "status"
        if is_child or is_status:
            result.append(request)
    return result


def events(cluster: kmock.KubernetesEmulator, reason: str | None = None) -> list[dict[str, Any]]:
    """Return the stored core/v1 Events, optionally only those with `reason`."""
    found = []
    for (resource, _, _), obj in cluster.objects.items():
        if resource != kmock.resource(EVENTS) or obj.deleted:
            continue
        if reason is None or obj.raw.get("reason") == reason:
            found.append(obj.raw)
    return found


async def eventually(
    check: Callable[[], Any], timeout: float = DEADLINE_SECONDS, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns without AssertionError; re-raise its last failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[Any]], timeout: float = DEADLINE_SECONDS, interval: float = 0.05
) -> Any:
    """Await `check` until it returns without AssertionError; re-raise its last failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


class OperatorThread:
    """The operator's kopf handlers running in a thread with their own event loop."""

    def __init__(
        self, options: HandlerOptions, namespaces: list[str], liveness_endpoint: str | None = None
    ) -> None:
        self.liveness_endpoint = liveness_endpoint
        self.memo = kopf.Memo()
        self.registry = build_registry(options)
        self.namespaces = namespaces
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        # Created in the operator's loop, and set from the test's loop with
        # call_soon_threadsafe.
        self.stop_flag: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kopf-operator", daemon=True)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.stop_flag = asyncio.Event()
        settings = kopf.OperatorSettings()
        # Short watch reconnects keep a broken stream from stalling a test.
        settings.watching.reconnect_backoff = 0.1
        # kmock 0.8 fails on GET /api/v1/namespaces (it parses "namespaces" as
        # the start of a namespaced path), so kopf must not observe namespaces.
        settings.scanning.disabled = True
        try:
            self.loop.run_until_complete(
                kopf.operator(
                    registry=self.registry,
                    settings=settings,
                    memo=self.memo,
                    standalone=True,
                    namespaces=self.namespaces,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready,
                    liveness_endpoint=self.liveness_endpoint,
                )
            )
        except BaseException as error:
            self.error = error
        finally:
            self.loop.close()

    async def start(self) -> None:
        self._thread.start()
        started = await asyncio.to_thread(self.ready.wait, DEADLINE_SECONDS)
        assert started, f"operator did not start within {DEADLINE_SECONDS} s: {self.error!r}"

    async def stop(self) -> None:
        if self.loop is not None and self.stop_flag is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop_flag.set)
        await asyncio.to_thread(self._thread.join, DEADLINE_SECONDS)

    async def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine in the operator's loop (where its locks live) and await it."""
        assert self.loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))


async def apply(cluster: kmock.KubernetesEmulator, body: dict[str, Any]) -> None:
    """Create a custom resource through the API, as kubectl would."""
    response = await cluster.post(CR_PATH, json=body)
    assert response.status == 200, await response.text()


async def patch_spec(cluster: kmock.KubernetesEmulator, spec_patch: dict[str, Any]) -> None:
    """Merge-patch the spec of the custom resource, as `kubectl patch --type merge` would."""
    response = await cluster.patch(f"{CR_PATH}/{NAME}", json={"spec": spec_patch})
    assert response.status == 200, await response.text()


async def wait_converged(cluster: kmock.KubernetesEmulator, name: str = NAME) -> dict[str, Any]:
    """Wait until every child exists and the status reports them; return the resource."""

    def check() -> dict[str, Any]:
        for resource, names in child_names(name).items():
            for child in names:
                assert live(cluster, resource, child) is not None, f"{resource} {child} missing"
        body = live(cluster, CR_RESOURCE, name)
        assert body is not None
        assert (body.get("status") or {}).get("conditions"), "status has no conditions yet"
        return body

    return await eventually(check)


def requests_to(requests: list[Any], resource: str, name: str) -> list[Any]:
    """Return the requests among `requests` that address one object."""
    wanted = kmock.resource(resource)
    return [r for r in requests if r.resource == wanted and r.name == name]


async def reconcile_now(operator: OperatorThread, name: str = NAME) -> Any:
    """Run one full reconcile of the resource in the operator's loop; return its outcome.

    Unlike a watch event, this never merges into a queued reconcile, so the
    outcome is that of a reconcile that started after the call.
    """
    reconciler = operator.memo.reconciler

    async def run() -> Any:
        body = await reconciler.api.get(DISAGGREGATED_DEPLOYMENTS, NAMESPACE, name)
        assert body is not None, f"{name} does not exist"
        return await reconciler.reconcile(body)

    return await operator.call(run())


async def delete_child(cluster: kmock.KubernetesEmulator, resource: str, name: str) -> None:
    """Delete an object through the API, as `kubectl delete` would."""
    group_version, plural = resource.rsplit("/", 1)
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    response = await cluster.delete(f"{root}/namespaces/{NAMESPACE}/{plural}/{name}")
    assert response.status == 200, await response.text()


async def patch_child(
    cluster: kmock.KubernetesEmulator,
    resource: str,
    name: str,
    patch: dict[str, Any],
    *,
    subresource: str | None = None,
) -> None:
    """Merge-patch an object through the API, as `kubectl patch --type merge` would."""
    group_version, plural = resource.rsplit("/", 1)
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    path = f"{root}/namespaces/{NAMESPACE}/{plural}/{name}"
    if subresource:
        path += f"/{subresource}"
    response = await cluster.patch(path, json=patch)
    assert response.status == 200, await response.text()


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """Return the first container of a Deployment's pod template."""
    return deployment["spec"]["template"]["spec"]["containers"][0]
