"""Thin async layer over the Kubernetes API: the only operator module that talks to it.

The reconcile logic calls `Kube` with plain dict manifests and gets plain dicts
back, so the logic above it compares JSON structures and never handles client
models. Requests go through the official `kubernetes` client's `ApiClient`
(its configuration, authentication and TLS handling) in a worker thread,
because that client is synchronous.

Writes use the two patch types that every API server supports for every kind:
JSON merge patch (a dict body, used for the status subresource) and JSON patch
(a list of operations, used for children, so a replaced field loses the keys
that the new value lacks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
import yaml
from kubernetes.client.exceptions import ApiException

from . import constants

logger = logging.getLogger(__name__)

# The kubeconfig that kubectl and the client read when KUBECONFIG is unset.
DEFAULT_KUBECONFIG = "~/.kube/config"
# Seconds one API request may take (connect and read) before it fails.
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Resource:
    """One API resource: where its objects live and what `kind` they carry."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """Return the URL path of the collection in `namespace`, or of one object in it."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        path = f"{root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SERVICES = Resource("", "v1", "services", "Service")
PODDISRUPTIONBUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
EVENTS = Resource("", "v1", "events", "Event")
PODS = Resource("", "v1", "pods", "Pod")
DISAGGREGATED_DEPLOYMENTS = Resource(
    constants.GROUP, constants.VERSION, constants.PLURAL, constants.KIND
)

# Kinds of the children that the builders produce, in the order they are applied.
CHILD_RESOURCES: tuple[Resource, ...] = (DEPLOYMENTS, SERVICES, PODDISRUPTIONBUDGETS)


def resource_of(manifest: Mapping[str, Any]) -> Resource:
    """Return the child resource that `manifest` (with apiVersion and kind) belongs to."""
    api_version = manifest.get("apiVersion")
    kind = manifest.get("kind")
    for resource in CHILD_RESOURCES:
        if resource.api_version == api_version and resource.kind == kind:
            return resource
    raise ValueError(
        f"unsupported child manifest apiVersion={api_version!r} kind={kind!r}: expected one of "
        + ", ".join(f"{r.api_version}/{r.kind}" for r in CHILD_RESOURCES)
    )


class ApiError(Exception):
    """A failed API request, with the HTTP status and the server's reason and message."""

    def __init__(self, verb: str, target: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{verb} {target} failed: HTTP {status} {reason}: {message}")
        self.verb = verb
        self.target = target
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later without a change on our side."""
        # 0 is a connection error or timeout; 409 a write race; 429 throttling.
        return self.status in (0, 408, 409, 429) or self.status >= 500


def _api_error(verb: str, target: str, error: ApiException) -> ApiError:
    status = int(error.status or 0)
    reason = str(error.reason or "")
    message = reason
    if error.body:
        try:
            payload = json.loads(error.body)
        except (TypeError, ValueError):
            message = str(error.body)[:500]
        else:
            if isinstance(payload, dict):
                reason = str(payload.get("reason") or reason)
                message = str(payload.get("message") or message)
    return ApiError(verb, target, status, reason, message)


class CredentialsError(Exception):
    """Neither the in-cluster service account nor a kubeconfig gives credentials."""


def load_api_client() -> kubernetes.client.ApiClient:
    """Build an API client from the in-cluster service account, else from KUBECONFIG.

    This is the order that kopf's default login handler uses, so the operator's
    own requests and kopf's watches use the same credentials. It reads files
    only and sends nothing to a server. Raises CredentialsError with a
    one-line message naming both sources and the fix when neither works.
    """
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        logger.info("loaded in-cluster credentials of the service account")
        return kubernetes.client.ApiClient(configuration)
    except kubernetes.config.ConfigException as error:
        in_cluster_error = error
    # The client reads KUBECONFIG when it is imported, so read it again here.
    config_file = os.environ.get("KUBECONFIG") or os.path.expanduser(DEFAULT_KUBECONFIG)
    try:
        kubernetes.config.load_kube_config(
            config_file=config_file, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError, ValueError, yaml.YAMLError) as error:
        source = "KUBECONFIG" if os.environ.get("KUBECONFIG") else "the default kubeconfig"
        raise CredentialsError(
            "missing Kubernetes credentials: the in-cluster service account is unavailable "
            f"({_one_line(in_cluster_error)}) and {source} {config_file} is not usable "
            f"({_kubeconfig_problem(config_file, error)}); set KUBECONFIG to a kubeconfig "
            "with a current context (kind: `kind export kubeconfig --name disagg`), or "
            "run the operator in a pod with a service account"
        ) from error
    logger.info("loaded credentials from the kubeconfig host=%s", configuration.host)
    return kubernetes.client.ApiClient(configuration)


def _kubeconfig_problem(config_file: str, error: Exception) -> str:
    paths = [path for path in config_file.split(os.pathsep) if path]
    if not any(os.path.exists(os.path.expanduser(path)) for path in paths):
        return "file not found"
    return _one_line(error)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class Kube:
    """Async access to the objects the operator reads and writes, as plain dicts."""

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self._api_client = api_client

    @classmethod
    def from_environment(cls) -> Kube:
        return cls(load_api_client())

    def close(self) -> None:
        self._api_client.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._request_sync, method, path, query, body, content_type)

    def _request_sync(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: Any,
        content_type: str | None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        target = path + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        try:
            serialized = self._api_client.param_serialize(
                method,
                path,
                query_params=list(query) or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api_client.call_api(
                *serialized, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
            response.read()
        except ApiException as error:
            raise _api_error(method, target, error) from error
        except (OSError, urllib3.exceptions.HTTPError) as error:
            raise ApiError(method, target, 0, type(error).__name__, str(error)) from error
        if not 200 <= response.status <= 299:
            error = ApiException(status=response.status, reason=response.reason)
            error.body = response.data.decode("utf-8", "replace") if response.data else None
            raise _api_error(method, target, error)
        if not response.data:
            return {}
        return json.loads(response.data)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """Return the object, or None when it does not exist."""
        try:
            return await self._request("GET", resource.path(namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self, resource: Resource, namespace: str, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Return the objects in `namespace` that carry all of `labels`.

        The selector is sent to the server and applied again here, so a server
        that ignores it still yields only matching objects.
        """
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        payload = await self._request(
            "GET", resource.path(namespace), query=[("labelSelector", selector)]
        )
        items = payload.get("items") or []
        return [
            item
            for item in items
            if all(
                (item.get("metadata", {}).get("labels") or {}).get(key) == value
                for key, value in labels.items()
            )
        ]

    async def create(
        self, resource: Resource, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request("POST", resource.path(namespace), body=dict(body))

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON merge patch (a mapping) or a JSON patch (a list of operations)."""
        if isinstance(patch, Mapping):
            content_type = "application/merge-patch+json"
            body: Any = dict(patch)
        else:
            content_type = "application/json-patch+json"
            body = [dict(operation) for operation in patch]
        return await self._request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=body,
            content_type=content_type,
        )

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete the object in the background; return False when it was already gone."""
        try:
            await self._request(
                "DELETE",
                resource.path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        """Record a core/v1 Event about `involved`; an API failure is logged, not raised."""
        meta = involved.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # Named like client-go names events: the object name and a unique suffix.
                "name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": event_type,
            "reason": reason,
            # The API server rejects event messages over 1024 characters.
            "message": message[:1024],
            "source": {"component": constants.MANAGER_NAME},
            "reportingComponent": constants.MANAGER_NAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.create(EVENTS, namespace, event)
        except ApiError as error:
            logger.warning(
                "failed to record event namespace=%s name=%s reason=%s: %s",
                namespace,
                meta.get("name"),
                reason,
                error,
            )
