"""Typed, defaulted view of a DisaggregatedDeployment spec, and its validation.

`parse_spec` turns the `spec` mapping of a custom resource into frozen
dataclasses with the CRD's defaults applied, so builders and the scaling
policy never look up a missing key. It raises `SpecError` where the mapping
cannot be read at all: a missing required field, a value of the wrong type,
an unknown field or an invalid quantity.

`validate` lists every remaining problem as `SpecProblem(field, message)`.
It checks the ranges, enums and CEL rules of the CRD again, because kmock
and API servers without the CRD's schema skip them. It also checks what a
schema cannot express: image reference syntax, GPU placement that can never
schedule, and a GPU budget that the minimum replicas exceed.

Callers: the kopf handlers (via `load`), the builders and the tests.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from docker_image import digest, reference
from kubernetes.utils import parse_quantity

from . import constants as c

# Quantity strings of the Kubernetes resource model (the CRD uses the same
# pattern), e.g. "4", "500m", "16Gi", "1e3".
_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY = re.compile(rf"^[+-]?{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?{_NUMBER}))?$")
# A CR name that also works as the prefix of Service names (RFC 1035 label).
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

_TOLERATION_OPERATORS = ("Exists", "Equal")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class SpecError(ValueError):
    """A spec that cannot be read: a field is missing, unknown or of the wrong type."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


@dataclass(frozen=True)
class SpecProblem:
    """One invalid value of a spec: the field path and what to change."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# --- The typed spec ------------------------------------------------------------
#
# Field names are the snake_case of the CRD's camelCase keys. A `json` entry in
# a field's metadata gives a key that does not follow that rule, and
# `json=None` marks a field that is not part of the CR.


@dataclass(frozen=True)
class ModelSpec:
    """The served model: its client-facing name and where the weights come from."""

    name: str
    source: str
    revision: str | None = None


@dataclass(frozen=True)
class Toleration:
    """A pod toleration of a node taint."""

    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_manifest(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class EnvVar:
    """An extra environment variable of a container."""

    name: str
    value: str | None = None
    value_from: Mapping[str, Any] | None = None

    def to_manifest(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class Resources:
    """Container resource limits and requests; quantities kept as the strings given."""

    limits: Mapping[str, str] = field(default_factory=dict, metadata={"omit_empty": True})
    requests: Mapping[str, str] = field(default_factory=dict, metadata={"omit_empty": True})

    def gpus(self) -> Decimal:
        """Return the nvidia.com/gpu limit, 0 when there is none."""
        return parse_quantity(self.limits.get(c.GPU_RESOURCE, 0))

    def to_manifest(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class PoolSpec:
    """One worker pool (prefill or decode): size, placement and worker limits."""

    role: str = field(metadata={"json": None})
    replicas: int = c.DEFAULT_POOL_REPLICAS
    min_replicas: int = c.DEFAULT_POOL_MIN_REPLICAS
    max_replicas: int = c.DEFAULT_POOL_MAX_REPLICAS
    image: str | None = None
    resources: Resources = field(default_factory=Resources)
    # None: no selector was given, so a GPU pool gets the default GPU node
    # selector. An empty mapping is an explicit "no selector".
    node_selector: Mapping[str, str] | None = None
    tolerations: tuple[Toleration, ...] = ()
    target_queue_depth: int = c.DEFAULT_TARGET_QUEUE_DEPTH
    # None: only the queue depth counts as load.
    target_in_flight: float | None = None
    # None: the pool uses spec.autoscaling.scaleDownStabilizationSeconds.
    scale_down_stabilization_seconds: int | None = None
    max_batch: int = c.DEFAULT_MAX_BATCH
    max_queue: int = c.DEFAULT_MAX_QUEUE
    drain_timeout_seconds: int = c.DEFAULT_DRAIN_TIMEOUT_SECONDS
    env: tuple[EnvVar, ...] = ()

    @property
    def is_gpu_pool(self) -> bool:
        return self.resources.gpus() > 0

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica uses; a fractional limit (rejected by validate) rounds up."""
        gpus = self.resources.gpus()
        return int(gpus.to_integral_value(rounding="ROUND_CEILING"))


@dataclass(frozen=True)
class RouterSpec:
    """The router Deployment and its HTTP Service."""

    replicas: int = c.DEFAULT_ROUTER_REPLICAS
    port: int = c.DEFAULT_ROUTER_PORT
    service_type: str = c.DEFAULT_SERVICE_TYPE
    resources: Resources = field(default_factory=Resources)
    # The router gets these and no pool's env: a gated Hugging Face model
    # needs HF_TOKEN here as well as in the pools.
    env: tuple[EnvVar, ...] = ()


@dataclass(frozen=True)
class KVTransferSpec:
    """The gRPC link between prefill and decode replicas."""

    port: int = c.DEFAULT_KV_TRANSFER_PORT
    timeout_seconds: int = c.DEFAULT_KV_TIMEOUT_SECONDS
    max_message_bytes: int = c.DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class DisaggregationSpec:
    """The router's choice between remote and local prefill."""

    min_remote_prefill_tokens: int = c.DEFAULT_MIN_REMOTE_PREFILL_TOKENS


@dataclass(frozen=True)
class AutoscalingSpec:
    """How the pools' replicas follow their queue depth."""

    mode: str = c.DEFAULT_AUTOSCALING_MODE
    interval_seconds: int = c.DEFAULT_AUTOSCALING_INTERVAL_SECONDS
    scale_up_stabilization_seconds: int = c.DEFAULT_SCALE_UP_STABILIZATION_SECONDS
    scale_down_stabilization_seconds: int = c.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS
    max_step_replicas: int = c.DEFAULT_MAX_STEP_REPLICAS
    tolerance: float = c.DEFAULT_AUTOSCALING_TOLERANCE
    max_total_gpus: int | None = field(default=None, metadata={"json": "maxTotalGPUs"})
    # None: a scale-down removes up to max_step_replicas.
    max_scale_down_step_replicas: int | None = None
    load_window_seconds: int = c.DEFAULT_LOAD_WINDOW_SECONDS


@dataclass(frozen=True)
class DeploymentSpec:
    """The whole spec of a DisaggregatedDeployment, defaults applied."""

    model: ModelSpec
    image: str
    image_pull_policy: str = c.DEFAULT_IMAGE_PULL_POLICY
    image_pull_secrets: tuple[str, ...] = ()
    prefill: PoolSpec = field(default_factory=lambda: PoolSpec(role=c.ROLE_PREFILL))
    decode: PoolSpec = field(default_factory=lambda: PoolSpec(role=c.ROLE_DECODE))
    router: RouterSpec = field(default_factory=RouterSpec)
    kv_transfer: KVTransferSpec = field(default_factory=KVTransferSpec)
    metrics_port: int = c.DEFAULT_METRICS_PORT
    disaggregation: DisaggregationSpec = field(default_factory=DisaggregationSpec)
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)

    def pool(self, role: str) -> PoolSpec:
        """Return the pool spec of a worker role (prefill or decode)."""
        if role == c.ROLE_PREFILL:
            return self.prefill
        if role == c.ROLE_DECODE:
            return self.decode
        raise ValueError(f"unknown worker role {role!r}: expected prefill or decode")

    def image_for(self, role: str) -> str:
        """Return the image of a role: the pool's own image, else spec.image."""
        if role in c.WORKER_ROLES:
            return self.pool(role).image or self.image
        return self.image


def _json_key(f: dataclasses.Field) -> str | None:
    if "json" in f.metadata:
        return f.metadata["json"]
    head, *rest = f.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def to_dict(value: Any) -> Any:
    """Render a spec dataclass as the camelCase mapping of the CR, None fields omitted.

    Rendering a parsed spec gives the fully defaulted spec that an API server
    would store; `image_pull_secrets` renders as a list of {name: ...}.
    """
    if dataclasses.is_dataclass(value):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            key = _json_key(f)
            item = getattr(value, f.name)
            if key is None or item is None:
                continue
            # Empty lists are absent in the CR; an empty nodeSelector is kept
            # because it overrides the default GPU node selector.
            if item == () or (f.metadata.get("omit_empty") and not item):
                continue
            if f.name == "image_pull_secrets":
                item = [{"name": name} for name in item]
            out[key] = to_dict(item)
        return out
    if isinstance(value, Mapping):
        return {key: to_dict(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [to_dict(item) for item in value]
    return value


# --- Parsing -------------------------------------------------------------------


class _Fields:
    """Typed access to one mapping of the spec, with its field path for errors."""

    def __init__(self, raw: Any, path: str, known: Sequence[str]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise SpecError(path, f"expected an object, got {_kind(raw)} {raw!r}")
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise SpecError(
                f"{path}.{unknown[0]}",
                f"unknown field; the fields of {path} are {', '.join(known)}",
            )
        self.raw = raw
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}"

    def string(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise SpecError(self.at(key), "required field is missing")
            return default
        if not isinstance(value, str):
            raise SpecError(self.at(key), f"expected a string, got {_kind(value)} {value!r}")
        return value

    def integer(self, key: str, default: int | None = None) -> int | None:
        value = self.raw.get(key)
        if value is None:
            return default
        # JSON has one number type, so 2.0 is accepted as 2; bool is not a number here.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.at(key), f"expected an integer, got {_kind(value)} {value!r}")
        return value

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(self.at(key), f"expected a number, got {_kind(value)} {value!r}")
        return float(value)

    def string_map(self, key: str) -> dict[str, str] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise SpecError(self.at(key), f"expected an object, got {_kind(value)} {value!r}")
        for item_key, item in value.items():
            if not isinstance(item, str):
                raise SpecError(
                    f"{self.at(key)}.{item_key}",
                    f'expected a string, got {_kind(item)} {item!r}; quote it, e.g. "{item}"',
                )
        return dict(value)

    def items(self, key: str) -> list[tuple[str, Any]]:
        """Return (path, item) pairs of a list field; an absent list is empty."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise SpecError(self.at(key), f"expected a list, got {_kind(value)} {value!r}")
        return [(f"{self.at(key)}[{index}]", item) for index, item in enumerate(value)]


def _kind(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _known(cls: type) -> list[str]:
    keys = [_json_key(f) for f in dataclasses.fields(cls)]
    return [key for key in keys if key is not None]


def _parse_quantities(raw: Any, path: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(path, f"expected an object of quantities, got {_kind(raw)} {raw!r}")
    out = {}
    for name, value in raw.items():
        text = (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )
        if not isinstance(text, str) or not _QUANTITY.match(text):
            raise SpecError(
                f"{path}.{name}",
                f"invalid quantity {value!r}; use a number with an optional suffix, "
                "e.g. 4, 500m, 16Gi",
            )
        out[name] = text
    return out


def _parse_resources(raw: Any, path: str) -> Resources:
    fields = _Fields(raw, path, _known(Resources))
    return Resources(
        limits=_parse_quantities(fields.raw.get("limits"), fields.at("limits")),
        requests=_parse_quantities(fields.raw.get("requests"), fields.at("requests")),
    )


def _parse_toleration(raw: Any, path: str) -> Toleration:
    fields = _Fields(raw, path, _known(Toleration))
    return Toleration(
        key=fields.string("key"),
        operator=fields.string("operator"),
        value=fields.string("value"),
        effect=fields.string("effect"),
        toleration_seconds=fields.integer("tolerationSeconds"),
    )


def _parse_env_var(raw: Any, path: str) -> EnvVar:
    fields = _Fields(raw, path, _known(EnvVar))
    value_from = fields.raw.get("valueFrom")
    if value_from is not None and not isinstance(value_from, Mapping):
        raise SpecError(
            fields.at("valueFrom"), f"expected an object, got {_kind(value_from)} {value_from!r}"
        )
    return EnvVar(
        name=fields.string("name", required=True),
        value=fields.string("value"),
        value_from=dict(value_from) if value_from is not None else None,
    )


def _parse_pool(raw: Any, path: str, role: str) -> PoolSpec:
    fields = _Fields(raw, path, _known(PoolSpec))
    return PoolSpec(
        role=role,
        replicas=fields.integer("replicas", c.DEFAULT_POOL_REPLICAS),
        min_replicas=fields.integer("minReplicas", c.DEFAULT_POOL_MIN_REPLICAS),
        max_replicas=fields.integer("maxReplicas", c.DEFAULT_POOL_MAX_REPLICAS),
        image=fields.string("image"),
        resources=_parse_resources(fields.raw.get("resources"), fields.at("resources")),
        node_selector=fields.string_map("nodeSelector"),
        tolerations=tuple(_parse_toleration(item, p) for p, item in fields.items("tolerations")),
        target_queue_depth=fields.integer("targetQueueDepth", c.DEFAULT_TARGET_QUEUE_DEPTH),
        target_in_flight=fields.number("targetInFlight"),
        scale_down_stabilization_seconds=fields.integer("scaleDownStabilizationSeconds"),
        max_batch=fields.integer("maxBatch", c.DEFAULT_MAX_BATCH),
        max_queue=fields.integer("maxQueue", c.DEFAULT_MAX_QUEUE),
        drain_timeout_seconds=fields.integer(
            "drainTimeoutSeconds", c.DEFAULT_DRAIN_TIMEOUT_SECONDS
        ),
        env=tuple(_parse_env_var(item, p) for p, item in fields.items("env")),
    )


def parse_spec(raw: Any, path: str = "spec") -> DeploymentSpec:
    """Parse the `spec` of a DisaggregatedDeployment, applying the CRD's defaults.

    Raises SpecError naming the field when a required field is missing, a
    field is unknown, or a value has the wrong type or is not a quantity.
    """
    if raw is None:
        raise SpecError(path, "required field is missing; set at least spec.model and spec.image")
    fields = _Fields(raw, path, _known(DeploymentSpec))

    if fields.raw.get("model") is None:
        raise SpecError(fields.at("model"), "required field is missing; set name and source")
    model = _Fields(fields.raw["model"], fields.at("model"), _known(ModelSpec))

    secrets = []
    for item_path, item in fields.items("imagePullSecrets"):
        secrets.append(_Fields(item, item_path, ["name"]).string("name", required=True))

    router = _Fields(fields.raw.get("router"), fields.at("router"), _known(RouterSpec))
    kv = _Fields(fields.raw.get("kvTransfer"), fields.at("kvTransfer"), _known(KVTransferSpec))
    disaggregation = _Fields(
        fields.raw.get("disaggregation"), fields.at("disaggregation"), _known(DisaggregationSpec)
    )
    scaling = _Fields(
        fields.raw.get("autoscaling"), fields.at("autoscaling"), _known(AutoscalingSpec)
    )

    return DeploymentSpec(
        model=ModelSpec(
            name=model.string("name", required=True),
            source=model.string("source", required=True),
            revision=model.string("revision"),
        ),
        image=fields.string("image", required=True),
        image_pull_policy=fields.string("imagePullPolicy", c.DEFAULT_IMAGE_PULL_POLICY),
        image_pull_secrets=tuple(secrets),
        prefill=_parse_pool(fields.raw.get("prefill"), fields.at("prefill"), c.ROLE_PREFILL),
        decode=_parse_pool(fields.raw.get("decode"), fields.at("decode"), c.ROLE_DECODE),
        router=RouterSpec(
            replicas=router.integer("replicas", c.DEFAULT_ROUTER_REPLICAS),
            port=router.integer("port", c.DEFAULT_ROUTER_PORT),
            service_type=router.string("serviceType", c.DEFAULT_SERVICE_TYPE),
            resources=_parse_resources(router.raw.get("resources"), router.at("resources")),
            env=tuple(_parse_env_var(item, p) for p, item in router.items("env")),
        ),
        kv_transfer=KVTransferSpec(
            port=kv.integer("port", c.DEFAULT_KV_TRANSFER_PORT),
            timeout_seconds=kv.integer("timeoutSeconds", c.DEFAULT_KV_TIMEOUT_SECONDS),
            max_message_bytes=kv.integer("maxMessageBytes", c.DEFAULT_MAX_MESSAGE_BYTES),
        ),
        metrics_port=fields.integer("metricsPort", c.DEFAULT_METRICS_PORT),
        disaggregation=DisaggregationSpec(
            min_remote_prefill_tokens=disaggregation.integer(
                "minRemotePrefillTokens", c.DEFAULT_MIN_REMOTE_PREFILL_TOKENS
            ),
        ),
        autoscaling=AutoscalingSpec(
            mode=scaling.string("mode", c.DEFAULT_AUTOSCALING_MODE),
            interval_seconds=scaling.integer(
                "intervalSeconds", c.DEFAULT_AUTOSCALING_INTERVAL_SECONDS
            ),
            scale_up_stabilization_seconds=scaling.integer(
                "scaleUpStabilizationSeconds", c.DEFAULT_SCALE_UP_STABILIZATION_SECONDS
            ),
            scale_down_stabilization_seconds=scaling.integer(
                "scaleDownStabilizationSeconds", c.DEFAULT_SCALE_DOWN_STABILIZATION_SECONDS
            ),
            max_step_replicas=scaling.integer("maxStepReplicas", c.DEFAULT_MAX_STEP_REPLICAS),
            tolerance=scaling.number("tolerance", c.DEFAULT_AUTOSCALING_TOLERANCE),
            max_total_gpus=scaling.integer("maxTotalGPUs"),
            max_scale_down_step_replicas=scaling.integer("maxScaleDownStepReplicas"),
            load_window_seconds=scaling.integer("loadWindowSeconds", c.DEFAULT_LOAD_WINDOW_SECONDS),
        ),
    )


def load(body: Mapping[str, Any]) -> tuple[DeploymentSpec | None, list[SpecProblem]]:
    """Parse and validate a whole custom resource body.

    Returns the spec and no problems when the resource is valid; otherwise
    the problems, and the spec too when it could be parsed. A caller reports
    the problems (InvalidSpec) and builds no children while there are any.
    """
    problems = validate_name((body.get("metadata") or {}).get("name"))
    try:
        spec = parse_spec(body.get("spec"))
    except SpecError as error:
        return None, [*problems, SpecProblem(error.field, error.message)]
    return spec, problems + validate(spec)


# --- Validation ----------------------------------------------------------------


def validate_name(name: Any) -> list[SpecProblem]:
    """List the problems of a CR name as the prefix of its children's names."""
    if not isinstance(name, str) or not name:
        return [SpecProblem("metadata.name", "required field is missing")]
    problems = []
    if len(name) > c.MAX_NAME_LENGTH:
        problems.append(
            SpecProblem(
                "metadata.name",
                f"{name!r} has {len(name)} characters; use at most {c.MAX_NAME_LENGTH} so that "
                "NAME-prefill, NAME-decode and NAME-router fit the 63-character limit of "
                "Service names",
            )
        )
    if not _NAME.match(name):
        problems.append(
            SpecProblem(
                "metadata.name",
                f"invalid name {name!r}; start with a lowercase letter and use only lowercase "
                "letters, digits and '-', because the name prefixes Service names",
            )
        )
    return problems


def validate(spec: DeploymentSpec) -> list[SpecProblem]:
    """List every problem of a parsed spec, in field order; empty means valid.

    Steps:
    1. ranges, enums and non-empty strings that the CRD schema declares,
    2. the CRD's cross-field CEL rules,
    3. image references,
    4. per pool: GPU quantities, placement and tolerations, env; the router's
       resources and env,
    5. the GPU budget against the replicas that must run.
    """
    problems: list[SpecProblem] = []
    problems += _check_ranges(spec)
    problems += _check_enums(spec)
    problems += _check_non_empty(spec)
    problems += _check_cross_fields(spec)
    problems += _check_image(spec.image, "spec.image")
    for role in c.WORKER_ROLES:
        pool = spec.pool(role)
        path = f"spec.{role}"
        if pool.image is not None:
            problems += _check_image(pool.image, f"{path}.image")
        problems += _check_resources(pool.resources, f"{path}.resources")
        problems += _check_placement(pool, path)
        problems += _check_tolerations(pool.tolerations, f"{path}.tolerations")
        problems += _check_env(pool.env, f"{path}.env")
    problems += _check_resources(spec.router.resources, "spec.router.resources")
    problems += _check_env(spec.router.env, "spec.router.env")
    problems += _check_gpu_budget(spec)
    return problems


def _check_ranges(spec: DeploymentSpec) -> list[SpecProblem]:
    # (field, value, minimum, maximum): the same bounds as the CRD schema.
    bounds: list[tuple[str, int | float | None, int | float, int | float | None]] = []
    for role in c.WORKER_ROLES:
        pool = spec.pool(role)
        path = f"spec.{role}"
        # Every request decodes on the decode pool, so only prefill may scale to zero.
        min_floor = 0 if role == c.ROLE_PREFILL else 1
        bounds += [
            (f"{path}.replicas", pool.replicas, 0, None),
            (f"{path}.minReplicas", pool.min_replicas, min_floor, None),
            (f"{path}.maxReplicas", pool.max_replicas, 1, None),
            (f"{path}.targetQueueDepth", pool.target_queue_depth, 1, None),
            (
                f"{path}.scaleDownStabilizationSeconds",
                pool.scale_down_stabilization_seconds,
                0,
                3600,
            ),
            (f"{path}.maxBatch", pool.max_batch, 1, None),
            (f"{path}.maxQueue", pool.max_queue, 1, None),
            (f"{path}.drainTimeoutSeconds", pool.drain_timeout_seconds, 0, 3600),
        ]
        bounds += [
            (f"{path}.tolerations[{index}].tolerationSeconds", t.toleration_seconds, 0, None)
            for index, t in enumerate(pool.tolerations)
        ]
    scaling = spec.autoscaling
    bounds += [
        ("spec.router.replicas", spec.router.replicas, 1, None),
        ("spec.router.port", spec.router.port, 1, 65535),
        ("spec.kvTransfer.port", spec.kv_transfer.port, 1, 65535),
        ("spec.kvTransfer.timeoutSeconds", spec.kv_transfer.timeout_seconds, 1, 3600),
        ("spec.kvTransfer.maxMessageBytes", spec.kv_transfer.max_message_bytes, 2**20, 2**31 - 1),
        ("spec.metricsPort", spec.metrics_port, 1, 65535),
        (
            "spec.disaggregation.minRemotePrefillTokens",
            spec.disaggregation.min_remote_prefill_tokens,
            0,
            None,
        ),
        ("spec.autoscaling.intervalSeconds", scaling.interval_seconds, 1, 3600),
        (
            "spec.autoscaling.scaleUpStabilizationSeconds",
            scaling.scale_up_stabilization_seconds,
            0,
            3600,
        ),
        (
            "spec.autoscaling.scaleDownStabilizationSeconds",
            scaling.scale_down_stabilization_seconds,
            0,
            3600,
        ),
        ("spec.autoscaling.maxStepReplicas", scaling.max_step_replicas, 1, None),
        ("spec.autoscaling.tolerance", scaling.tolerance, 0, None),
        ("spec.autoscaling.maxTotalGPUs", scaling.max_total_gpus, 1, None),
        (
            "spec.autoscaling.maxScaleDownStepReplicas",
            scaling.max_scale_down_step_replicas,
            1,
            None,
        ),
        ("spec.autoscaling.loadWindowSeconds", scaling.load_window_seconds, 0, 3600),
    ]

    problems = []
    for path, value, minimum, maximum in bounds:
        if value is None:
            continue
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
            problems.append(SpecProblem(path, f"{value} is out of range; use {allowed}"))

    # The CRD's exclusive bounds. A tolerance of 1 or more never scales down.
    if scaling.tolerance >= 1:
        problems.append(
            SpecProblem(
                "spec.autoscaling.tolerance",
                f"{scaling.tolerance:g} is out of range; use at least 0 and below 1, e.g. 0.1",
            )
        )
    for role in c.WORKER_ROLES:
        target = spec.pool(role).target_in_flight
        if target is not None and target <= 0:
            problems.append(
                SpecProblem(
                    f"spec.{role}.targetInFlight",
                    f"{target:g} is out of range; use a number above 0, e.g. 1, or leave it unset",
                )
            )
    return problems


def _check_enums(spec: DeploymentSpec) -> list[SpecProblem]:
    choices = [
        ("spec.imagePullPolicy", spec.image_pull_policy, c.IMAGE_PULL_POLICIES),
        ("spec.router.serviceType", spec.router.service_type, c.SERVICE_TYPES),
        ("spec.autoscaling.mode", spec.autoscaling.mode, c.AUTOSCALING_MODES),
    ]
    for role in c.WORKER_ROLES:
        for index, toleration in enumerate(spec.pool(role).tolerations):
            path = f"spec.{role}.tolerations[{index}]"
            choices.append((f"{path}.operator", toleration.operator, _TOLERATION_OPERATORS))
            choices.append((f"{path}.effect", toleration.effect, _TAINT_EFFECTS))

    problems = []
    for path, value, allowed in choices:
        if value is not None and value not in allowed:
            problems.append(
                SpecProblem(path, f"invalid value {value!r}; use one of {', '.join(allowed)}")
            )
    return problems


def _check_non_empty(spec: DeploymentSpec) -> list[SpecProblem]:
    # Strings with minLength 1 in the CRD; spec.image and pool images are
    # checked as image references instead.
    strings = [
        ("spec.model.name", spec.model.name),
        ("spec.model.source", spec.model.source),
        ("spec.model.revision", spec.model.revision),
    ]
    strings += [
        (f"spec.imagePullSecrets[{index}].name", name)
        for index, name in enumerate(spec.image_pull_secrets)
    ]
    return [
        SpecProblem(path, "must not be empty; set a value or remove the field")
        for path, value in strings
        if value is not None and not value.strip()
    ]


def _check_cross_fields(spec: DeploymentSpec) -> list[SpecProblem]:
    # The same rules as the CRD's x-kubernetes-validations.
    problems = []
    for role in c.WORKER_ROLES:
        pool = spec.pool(role)
        path = f"spec.{role}"
        if pool.min_replicas > pool.max_replicas:
            problems.append(
                SpecProblem(
                    f"{path}.minReplicas",
                    f"minReplicas {pool.min_replicas} is greater than maxReplicas "
                    f"{pool.max_replicas}; lower minReplicas or raise maxReplicas",
                )
            )
        elif not pool.min_replicas <= pool.replicas <= pool.max_replicas:
            problems.append(
                SpecProblem(
                    f"{path}.replicas",
                    f"replicas {pool.replicas} is outside minReplicas..maxReplicas "
                    f"({pool.min_replicas}..{pool.max_replicas}); set replicas within them",
                )
            )
    if spec.kv_transfer.port == spec.metrics_port:
        problems.append(
            SpecProblem(
                "spec.metricsPort",
                f"metricsPort {spec.metrics_port} equals kvTransfer.port; both are ports of "
                "the same worker container, so choose two different ports",
            )
        )
    return problems


def _check_image(image: str, path: str) -> list[SpecProblem]:
    try:
        reference.Reference.parse(image)
    # An invalid digest (e.g. upper-case hex) raises InvalidDigest, which is
    # not an InvalidReference.
    except (reference.InvalidReference, digest.InvalidDigest) as error:
        return [
            SpecProblem(
                path,
                f"invalid image reference {image!r} ({error}); use "
                "[REGISTRY/]REPOSITORY[:TAG][@DIGEST] with a lowercase repository, "
                "e.g. registry.example.com/disagg-worker:0.1.0",
            )
        ]
    return []


def _check_resources(resources: Resources, path: str) -> list[SpecProblem]:
    problems = []
    limit = resources.limits.get(c.GPU_RESOURCE)
    request = resources.requests.get(c.GPU_RESOURCE)

    # Kubernetes allocates whole devices of an extended resource, and requires
    # the limit and the request to be equal when both are given.
    if limit is not None:
        gpus = parse_quantity(limit)
        if gpus < 0 or gpus != gpus.to_integral_value():
            problems.append(
                SpecProblem(
                    f"{path}.limits.{c.GPU_RESOURCE}",
                    f"{limit!r} is not a whole number of GPUs; use 0, 1, 2, ...",
                )
            )
    if request is not None and limit is None:
        problems.append(
            SpecProblem(
                f"{path}.requests.{c.GPU_RESOURCE}",
                f"a GPU request needs a limit; set limits.{c.GPU_RESOURCE}: {request}",
            )
        )
    elif request is not None and parse_quantity(request) != parse_quantity(limit):
        problems.append(
            SpecProblem(
                f"{path}.requests.{c.GPU_RESOURCE}",
                f"GPU request {request} differs from the GPU limit {limit}; set them equal "
                "or remove the request",
            )
        )

    for name, requested in resources.requests.items():
        limited = resources.limits.get(name)
        if name == c.GPU_RESOURCE or limited is None:
            continue
        if parse_quantity(requested) > parse_quantity(limited):
            problems.append(
                SpecProblem(
                    f"{path}.requests.{name}",
                    f"request {requested} is greater than the limit {limited}; lower the "
                    "request or raise the limit",
                )
            )
    return problems


def _check_placement(pool: PoolSpec, path: str) -> list[SpecProblem]:
    # A GPU pool whose explicit node selector rules out GPU nodes never schedules.
    if not pool.is_gpu_pool or pool.node_selector is None:
        return []
    problems = []
    present = pool.node_selector.get(c.GPU_PRESENT_LABEL)
    if present is not None and present != "true":
        problems.append(
            SpecProblem(
                f"{path}.nodeSelector",
                f"{c.GPU_PRESENT_LABEL}: {present!r} selects nodes without a GPU, but the pool "
                f"has {c.GPU_RESOURCE} limits; remove that selector key or the GPU limits",
            )
        )
    count_label = "nvidia.com/gpu.count"
    count = pool.node_selector.get(count_label)
    if count is not None and count.isdigit() and int(count) < pool.gpus_per_replica:
        problems.append(
            SpecProblem(
                f"{path}.nodeSelector",
                f"{count_label}: {count!r} selects nodes with fewer GPUs than the "
                f"{pool.gpus_per_replica} that one replica needs; select larger nodes or "
                "lower the GPU limit",
            )
        )
    return problems


def _check_tolerations(tolerations: Sequence[Toleration], path: str) -> list[SpecProblem]:
    # The pod validation rules of Kubernetes for tolerations; a Deployment with a
    # broken toleration is rejected when it is created.
    problems = []
    for index, toleration in enumerate(tolerations):
        item = f"{path}[{index}]"
        operator = toleration.operator or "Equal"
        if not toleration.key and operator != "Exists":
            problems.append(
                SpecProblem(
                    f"{item}.operator",
                    "a toleration without a key matches every taint and needs operator Exists",
                )
            )
        if operator == "Exists" and toleration.value:
            problems.append(
                SpecProblem(
                    f"{item}.value",
                    f"operator Exists takes no value, got {toleration.value!r}; remove the "
                    "value or use operator Equal",
                )
            )
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            problems.append(
                SpecProblem(
                    f"{item}.tolerationSeconds",
                    "tolerationSeconds applies only to effect NoExecute; remove it or set "
                    "effect: NoExecute",
                )
            )
    return problems


def _check_env(env: Sequence[EnvVar], path: str) -> list[SpecProblem]:
    problems = []
    seen: set[str] = set()
    for index, variable in enumerate(env):
        item = f"{path}[{index}]"
        if not variable.name:
            problems.append(SpecProblem(f"{item}.name", "required field is empty"))
        elif variable.name in seen:
            problems.append(
                SpecProblem(f"{item}.name", f"duplicate variable {variable.name!r}; keep one")
            )
        seen.add(variable.name)
        if variable.value and variable.value_from is not None:
            problems.append(
                SpecProblem(f"{item}.valueFrom", "set either value or valueFrom, not both")
            )
    return problems


def _check_gpu_budget(spec: DeploymentSpec) -> list[SpecProblem]:
    budget = spec.autoscaling.max_total_gpus
    if budget is None:
        return []

    def gpus(prefill_replicas: int, decode_replicas: int) -> int:
        return (
            prefill_replicas * spec.prefill.gpus_per_replica
            + decode_replicas * spec.decode.gpus_per_replica
        )

    needed_min = gpus(spec.prefill.min_replicas, spec.decode.min_replicas)
    if needed_min > budget:
        return [
            SpecProblem(
                "spec.autoscaling.maxTotalGPUs",
                f"{budget} GPUs is less than the {needed_min} that the minimum replicas need "
                f"(prefill {spec.prefill.min_replicas} x {spec.prefill.gpus_per_replica}, "
                f"decode {spec.decode.min_replicas} x {spec.decode.gpus_per_replica}); raise "
                "maxTotalGPUs or lower minReplicas",
            )
        ]
    needed_initial = gpus(spec.prefill.replicas, spec.decode.replicas)
    if needed_initial > budget:
        return [
            SpecProblem(
                "spec.autoscaling.maxTotalGPUs",
                f"{budget} GPUs is less than the {needed_initial} that the initial replicas "
                f"need (prefill {spec.prefill.replicas} x {spec.prefill.gpus_per_replica}, "
                f"decode {spec.decode.replicas} x {spec.decode.gpus_per_replica}); raise "
                "maxTotalGPUs or lower replicas",
            )
        ]
    return []
