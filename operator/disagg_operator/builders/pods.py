"""Pod templates of the prefill, decode and router Deployments.

Pure functions from a parsed spec to a pod template dict; deployments.py
wraps them. The arguments here are the command-line contract with
`disagg worker` and `disagg router`.
"""

from __future__ import annotations

from typing import Any

from .. import constants as c
from ..spec import DeploymentSpec, EnvVar, PoolSpec
from .meta import Owner, labels, template_hash

_TMP_VOLUME = "tmp"
_MODEL_CACHE_VOLUME = "model-cache"

# A model load can take minutes (weights from the network, a large GGUF
# conversion); the startup probe allows this long before liveness applies.
_STARTUP_SECONDS = 600
_PROBE_PERIOD_SECONDS = 5


def worker_args(spec: DeploymentSpec, role: str) -> list[str]:
    """Return the arguments of `disagg` in a worker container of `role`."""
    pool = spec.pool(role)
    args = [
        "worker",
        role,
        "--model",
        spec.model.source,
        "--served-model-name",
        spec.model.name,
    ]
    if spec.model.revision is not None:
        args += ["--revision", spec.model.revision]
    args += [
        "--grpc-port",
        str(spec.kv_transfer.port),
        "--metrics-port",
        str(spec.metrics_port),
        "--max-message-bytes",
        str(spec.kv_transfer.max_message_bytes),
        "--kv-timeout",
        str(spec.kv_transfer.timeout_seconds),
        "--max-batch",
        str(pool.max_batch),
        "--max-queue",
        str(pool.max_queue),
        "--drain-timeout",
        str(pool.drain_timeout_seconds),
    ]
    return args


def router_args(spec: DeploymentSpec, owner: Owner) -> list[str]:
    """Return the arguments of `disagg` in the router container.

    `--discover NAME.NAMESPACE` makes the router resolve the headless
    Services NAME-prefill.NAMESPACE.svc and NAME-decode.NAMESPACE.svc, and
    `--discover-port` is the workers' gRPC port. The router loads the
    tokenizer at the workers' revision and serves requests for spec.model.name.
    """
    args = [
        "router",
        "--port",
        str(spec.router.port),
        "--model",
        spec.model.source,
        "--served-model-name",
        spec.model.name,
    ]
    if spec.model.revision is not None:
        args += ["--revision", spec.model.revision]
    args += [
        "--discover",
        f"{owner.name}.{owner.namespace}",
        "--discover-port",
        str(spec.kv_transfer.port),
        "--min-remote-prefill-tokens",
        str(spec.disaggregation.min_remote_prefill_tokens),
        "--kv-timeout",
        str(spec.kv_transfer.timeout_seconds),
    ]
    return args


def worker_pod_template(spec: DeploymentSpec, owner: Owner, role: str) -> dict[str, Any]:
    """Return the pod template of the worker pool of `role`, hash annotation included."""
    pool = spec.pool(role)
    container = {
        "name": role,
        "image": spec.image_for(role),
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["disagg"],
        "args": worker_args(spec, role),
        "ports": [
            {"name": c.PORT_NAME_GRPC, "containerPort": spec.kv_transfer.port, "protocol": "TCP"},
            {"name": c.PORT_NAME_METRICS, "containerPort": spec.metrics_port, "protocol": "TCP"},
        ],
        "env": _env(pool.env),
        "resources": pool.resources.to_manifest(),
        "startupProbe": _http_probe(
            c.WORKER_LIVE_PATH,
            c.PORT_NAME_METRICS,
            failure_threshold=_STARTUP_SECONDS // _PROBE_PERIOD_SECONDS,
        ),
        "readinessProbe": _http_probe(c.WORKER_READY_PATH, c.PORT_NAME_METRICS),
        "livenessProbe": _http_probe(c.WORKER_LIVE_PATH, c.PORT_NAME_METRICS, failure_threshold=6),
        "lifecycle": _pre_stop(),
        "securityContext": _container_security_context(),
        "volumeMounts": _volume_mounts(),
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        # The preStop sleep, then the worker's own drain, then a margin before SIGKILL.
        "terminationGracePeriodSeconds": (
            c.PRE_STOP_SLEEP_SECONDS + pool.drain_timeout_seconds + c.DRAIN_GRACE_MARGIN_SECONDS
        ),
        **_pod_defaults(spec),
    }
    placement = _placement(pool)
    pod_spec.update(placement)
    annotations = _prometheus_annotations(spec.metrics_port)
    return _with_hash(owner, role, pod_spec, annotations)


def router_pod_template(spec: DeploymentSpec, owner: Owner) -> dict[str, Any]:
    """Return the pod template of the router, hash annotation included."""
    container = {
        "name": c.ROLE_ROUTER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["disagg"],
        "args": router_args(spec, owner),
        "ports": [{"name": c.PORT_NAME_HTTP, "containerPort": spec.router.port, "protocol": "TCP"}],
        "env": _env(spec.router.env),
        "resources": spec.router.resources.to_manifest(),
        # /health returns 503 while no decode replica is ready, which is a
        # reason to take the router out of its Service, not to restart it. So
        # startup and liveness only check that the HTTP port accepts connections.
        "startupProbe": _tcp_probe(
            c.PORT_NAME_HTTP, failure_threshold=_STARTUP_SECONDS // _PROBE_PERIOD_SECONDS
        ),
        "readinessProbe": _http_probe(c.ROUTER_HEALTH_PATH, c.PORT_NAME_HTTP),
        "livenessProbe": _tcp_probe(c.PORT_NAME_HTTP, failure_threshold=6),
        "lifecycle": _pre_stop(),
        "securityContext": _container_security_context(),
        "volumeMounts": _volume_mounts(),
    }
    pod_spec = {
        "containers": [container],
        # The router's open streams end when their decode requests do, so it
        # gets as long as the decode pool to drain.
        "terminationGracePeriodSeconds": (
            c.PRE_STOP_SLEEP_SECONDS
            + spec.decode.drain_timeout_seconds
            + c.DRAIN_GRACE_MARGIN_SECONDS
        ),
        **_pod_defaults(spec),
    }
    annotations = _prometheus_annotations(spec.router.port)
    return _with_hash(owner, c.ROLE_ROUTER, pod_spec, annotations)


def _with_hash(
    owner: Owner, role: str, pod_spec: dict[str, Any], annotations: dict[str, str]
) -> dict[str, Any]:
    # The hash covers everything in the template except itself, so any change
    # to a pool's inputs changes that pool's hash and no other.
    template = {"metadata": {"labels": labels(owner, role), "annotations": annotations}}
    template["spec"] = pod_spec
    annotations[c.ANNOTATION_TEMPLATE_HASH] = template_hash(template)
    return template


def _pod_defaults(spec: DeploymentSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {
        # Workers and the router never call the Kubernetes API.
        "automountServiceAccountToken": False,
        # Service links add one variable per Service in the namespace; unused here.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": c.RUN_AS_USER,
            "runAsGroup": c.RUN_AS_USER,
            "fsGroup": c.RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": _TMP_VOLUME, "emptyDir": {}},
            {"name": _MODEL_CACHE_VOLUME, "emptyDir": {}},
        ],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    return pod


def _placement(pool: PoolSpec) -> dict[str, Any]:
    """Return nodeSelector and tolerations of a pool.

    A GPU pool (a nvidia.com/gpu limit) gets the GPU toleration and, unless
    the pool sets its own nodeSelector, the default GPU node selector. A CPU
    pool gets only what the pool spec sets.
    """
    placement: dict[str, Any] = {}
    if pool.node_selector is not None:
        node_selector = dict(pool.node_selector)
    elif pool.is_gpu_pool:
        node_selector = dict(c.DEFAULT_GPU_NODE_SELECTOR)
    else:
        node_selector = {}
    if node_selector:
        placement["nodeSelector"] = node_selector

    tolerations = [dict(c.GPU_TOLERATION)] if pool.is_gpu_pool else []
    for toleration in pool.tolerations:
        item = toleration.to_manifest()
        if item not in tolerations:
            tolerations.append(item)
    if tolerations:
        placement["tolerations"] = tolerations
    return placement


def _env(extra: tuple[EnvVar, ...]) -> list[dict[str, Any]]:
    """Return the container environment: pod identity, cache paths, then the spec's env.

    A variable of the spec replaces a built-in one of the same name.
    """
    builtin = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        # The root filesystem is read-only, so caches go to the model-cache volume.
        # HF_HOME is the path that the worker image sets too.
        {"name": "HF_HOME", "value": f"{c.MODEL_CACHE_PATH}/huggingface"},
        {"name": "XDG_CACHE_HOME", "value": c.MODEL_CACHE_PATH},
        {"name": "TMPDIR", "value": c.TMP_PATH},
    ]
    overridden = {variable.name for variable in extra}
    env = [item for item in builtin if item["name"] not in overridden]
    env += [variable.to_manifest() for variable in extra]
    return env


def _field_env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def _http_probe(path: str, port: str, failure_threshold: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": _PROBE_PERIOD_SECONDS,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _tcp_probe(port: str, failure_threshold: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": _PROBE_PERIOD_SECONDS,
        "timeoutSeconds": 2,
        "failureThreshold": failure_threshold,
    }


def _pre_stop() -> dict[str, Any]:
    # The sleep gives endpoint controllers time to remove the pod from its
    # Services before SIGTERM starts the drain. The sleep action needs no
    # shell in the image (Kubernetes 1.30 and later).
    return {"preStop": {"sleep": {"seconds": c.PRE_STOP_SLEEP_SECONDS}}}


def _container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": _TMP_VOLUME, "mountPath": c.TMP_PATH},
        {"name": _MODEL_CACHE_VOLUME, "mountPath": c.MODEL_CACHE_PATH},
    ]


def _prometheus_annotations(port: int) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
