"""Names, label keys, condition types, event reasons and defaults of the operator.

Every module of the operator (builders, spec parsing, handlers, status) and the
Helm chart tests take these values from here, so a contract name is spelled
once. The defaults below are the same ones the CRD schema declares; a test
compares the two.
"""

from __future__ import annotations

from typing import Final

# --- The custom resource -----------------------------------------------------

GROUP: Final = "disagg.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DisaggregatedDeployment"
LIST_KIND: Final = "DisaggregatedDeploymentList"
SINGULAR: Final = "disaggregateddeployment"
PLURAL: Final = "disaggregateddeployments"
SHORT_NAME: Final = "dd"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- Roles -------------------------------------------------------------------

ROLE_PREFILL: Final = "prefill"
ROLE_DECODE: Final = "decode"
ROLE_ROUTER: Final = "router"
# Roles that run model workers, in the order children are built and reported.
WORKER_ROLES: Final = (ROLE_PREFILL, ROLE_DECODE)
ROLES: Final = (ROLE_PREFILL, ROLE_DECODE, ROLE_ROUTER)


def child_name(name: str, role: str) -> str:
    """Return the name of the Deployment and Service of `role` for the CR `name`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return f"{name}-{role}"


def prefill_name(name: str) -> str:
    """Return the name of the prefill pool's Deployment and headless Service."""
    return child_name(name, ROLE_PREFILL)


def decode_name(name: str) -> str:
    """Return the name of the decode pool's Deployment and headless Service."""
    return child_name(name, ROLE_DECODE)


def router_name(name: str) -> str:
    """Return the name of the router's Deployment and HTTP Service."""
    return child_name(name, ROLE_ROUTER)


# Longest CR name whose child names still fit a Service name (an RFC 1035
# label, at most 63 characters): 63 minus the longest suffix, "-prefill".
MAX_NAME_LENGTH: Final = 63 - len("-" + ROLE_PREFILL)

# --- Labels and annotations ----------------------------------------------------

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT: Final = f"{GROUP}/deployment"
LABEL_ROLE: Final = f"{GROUP}/role"

# Value of app.kubernetes.io/name on every child.
APP_NAME: Final = "disagg"
# Value of app.kubernetes.io/managed-by on every child.
MANAGER_NAME: Final = "disagg-operator"

# Hash of the inputs of one pool's pod template; a change rolls only that pool.
ANNOTATION_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"

# --- Status --------------------------------------------------------------------

CONDITION_AVAILABLE: Final = "Available"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_DEGRADED: Final = "Degraded"
CONDITION_TYPES: Final = (CONDITION_AVAILABLE, CONDITION_PROGRESSING, CONDITION_DEGRADED)

CONDITION_TRUE: Final = "True"
CONDITION_FALSE: Final = "False"
CONDITION_UNKNOWN: Final = "Unknown"

# --- Event reasons (also used as condition reasons) ----------------------------

REASON_CREATED: Final = "Created"
REASON_UPDATED: Final = "Updated"
REASON_DELETED: Final = "Deleted"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_RECONCILE_ERROR: Final = "ReconcileError"
REASON_SCALED: Final = "Scaled"
REASON_SCALE_FAILED: Final = "ScaleFailed"
REASON_ROLLING_OUT: Final = "RollingOut"
REASON_PODS_READY: Final = "PodsReady"
REASON_PODS_NOT_READY: Final = "PodsNotReady"
# Degraded=False: no failure is known (a rollout may still be in progress).
REASON_AS_EXPECTED: Final = "AsExpected"
REASON_GPU_BUDGET_EXCEEDED: Final = "GPUBudgetExceeded"

EVENT_NORMAL: Final = "Normal"
EVENT_WARNING: Final = "Warning"

# --- GPU placement -------------------------------------------------------------

GPU_RESOURCE: Final = "nvidia.com/gpu"
# Label that NVIDIA GPU feature discovery sets on nodes with a GPU.
GPU_PRESENT_LABEL: Final = "nvidia.com/gpu.present"
DEFAULT_GPU_NODE_SELECTOR: Final = {GPU_PRESENT_LABEL: "true"}
# Tolerates the NoSchedule taint with key nvidia.com/gpu that GPU node pools
# often carry; operator Exists matches any taint value.
GPU_TOLERATION: Final = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

# --- Ports ---------------------------------------------------------------------

# Router HTTP port (OpenAI-compatible API).
DEFAULT_ROUTER_PORT: Final = 8000
# Worker gRPC port for KV transfer and prefill requests (spec.kvTransfer.port).
DEFAULT_KV_TRANSFER_PORT: Final = 50051
# Worker port of Prometheus /metrics and /health/ready, /health/live (spec.metricsPort).
DEFAULT_METRICS_PORT: Final = 9090

PORT_NAME_HTTP: Final = "http"
PORT_NAME_GRPC: Final = "grpc"
PORT_NAME_METRICS: Final = "metrics"

# Health endpoints served on the metrics port of a worker and on the router port.
WORKER_READY_PATH: Final = "/health/ready"
WORKER_LIVE_PATH: Final = "/health/live"
ROUTER_HEALTH_PATH: Final = "/health"

# --- Spec defaults (the CRD declares the same values) --------------------------

DEFAULT_IMAGE_PULL_POLICY: Final = "IfNotPresent"
IMAGE_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")

DEFAULT_POOL_REPLICAS: Final = 1
DEFAULT_POOL_MIN_REPLICAS: Final = 1
DEFAULT_POOL_MAX_REPLICAS: Final = 4
DEFAULT_TARGET_QUEUE_DEPTH: Final = 4
DEFAULT_MAX_BATCH: Final = 16
DEFAULT_MAX_QUEUE: Final = 64

DEFAULT_ROUTER_REPLICAS: Final = 1
DEFAULT_SERVICE_TYPE: Final = "ClusterIP"
SERVICE_TYPES: Final = ("ClusterIP", "NodePort", "LoadBalancer")

DEFAULT_KV_TIMEOUT_SECONDS: Final = 30
# Largest gRPC message that workers send or accept: 64 MiB.
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024

DEFAULT_MIN_REMOTE_PREFILL_TOKENS: Final = 64

AUTOSCALING_BUILTIN: Final = "builtin"
AUTOSCALING_EXTERNAL: Final = "external"
AUTOSCALING_OFF: Final = "off"
AUTOSCALING_MODES: Final = (AUTOSCALING_BUILTIN, AUTOSCALING_EXTERNAL, AUTOSCALING_OFF)
DEFAULT_AUTOSCALING_MODE: Final = AUTOSCALING_BUILTIN
DEFAULT_AUTOSCALING_INTERVAL_SECONDS: Final = 15
DEFAULT_SCALE_UP_STABILIZATION_SECONDS: Final = 0
DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS: Final = 300
# Relative deviation from the target queue depth that does not trigger scaling.
DEFAULT_AUTOSCALING_TOLERANCE: Final = 0.1
# Most replicas one builtin scaling decision adds or removes per pool.
DEFAULT_MAX_STEP_REPLICAS: Final = 4
# Seconds of past decisions whose mean load a decision uses; 0 uses the current load only.
DEFAULT_LOAD_WINDOW_SECONDS: Final = 0

# --- Pod lifecycle -------------------------------------------------------------

# Seconds a worker gets after SIGTERM to finish its running requests
# (`--drain-timeout`); the pod's grace period adds DRAIN_GRACE_MARGIN_SECONDS.
DEFAULT_DRAIN_TIMEOUT_SECONDS: Final = 60
# Seconds the preStop hook sleeps so endpoints stop routing to the pod before
# SIGTERM reaches the process.
PRE_STOP_SLEEP_SECONDS: Final = 5
DRAIN_GRACE_MARGIN_SECONDS: Final = 10
# Non-root user and group id of the worker image (worker/Dockerfile).
RUN_AS_USER: Final = 65532
MODEL_CACHE_PATH: Final = "/var/cache/disagg"
TMP_PATH: Final = "/tmp"
