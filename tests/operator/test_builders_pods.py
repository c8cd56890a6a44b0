"""Pod templates: arguments, probes, drain, security context, volumes and environment."""

from __future__ import annotations

import pytest
from crd_support import make_body
from disagg_operator.builders import build_children


def pod_spec(body, role):
    name = f"{body['metadata']['name']}-{role}"
    for child in build_children(body):
        if child["kind"] == "Deployment" and child["metadata"]["name"] == name:
            return child["spec"]["template"]["spec"]
    raise AssertionError(f"no Deployment {name}")


def container(body, role):
    (only,) = pod_spec(body, role)["containers"]
    return only


def flag(args, name):
    return args[args.index(name) + 1]


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_worker_args_defaults(role):
    c = container(make_body(), role)
    assert c["command"] == ["disagg"]
    assert c["args"] == [
        "worker",
        role,
        "--model",
        "smollm2",
        "--served-model-name",
        "SmolLM2-135M-Instruct",
        "--grpc-port",
        "50051",
        "--metrics-port",
        "9090",
        "--max-message-bytes",
        "67108864",
        "--kv-timeout",
        "30",
        "--max-batch",
        "16",
        "--max-queue",
        "64",
        "--drain-timeout",
        "60",
    ]


WORKER_ARG_CASES = [
    # (case id, spec overrides, flag, expected value in the decode worker)
    ("grpc-port-50052", {"kvTransfer": {"port": 50052}}, "--grpc-port", "50052"),
    ("metrics-port-9100", {"metricsPort": 9100}, "--metrics-port", "9100"),
    (
        "max-message-bytes-8MiB",
        {"kvTransfer": {"maxMessageBytes": 8388608}},
        "--max-message-bytes",
        "8388608",
    ),
    ("drain-timeout-120", {"decode": {"drainTimeoutSeconds": 120}}, "--drain-timeout", "120"),
    ("max-batch-64", {"decode": {"maxBatch": 64}}, "--max-batch", "64"),
    ("kv-timeout-5", {"kvTransfer": {"timeoutSeconds": 5}}, "--kv-timeout", "5"),
    ("max-queue-128", {"decode": {"maxQueue": 128}}, "--max-queue", "128"),
    (
        "revision-main",
        {"model": {"name": "m", "source": "org/model", "revision": "main"}},
        "--revision",
        "main",
    ),
    (
        "model-source-org-model",
        {"model": {"name": "m", "source": "org/model"}},
        "--model",
        "org/model",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "name", "value"),
    [case[1:] for case in WORKER_ARG_CASES],
    ids=[case[0] for case in WORKER_ARG_CASES],
)
def test_worker_arg_follows_spec(overrides, name, value):
    assert flag(container(make_body(**overrides), "decode")["args"], name) == value


def test_worker_without_revision_has_no_flag():
    assert "--revision" not in container(make_body(), "prefill")["args"]


def test_router_args_defaults():
    assert container(make_body(), "router")["args"] == [
        "router",
        "--port",
        "8000",
        "--model",
        "smollm2",
        "--served-model-name",
        "SmolLM2-135M-Instruct",
        "--discover",
        "demo.models",
        "--discover-port",
        "50051",
        "--min-remote-prefill-tokens",
        "64",
        "--kv-timeout",
        "30",
    ]


ROUTER_ARG_CASES = [
    ("port-8080", {"router": {"port": 8080}}, "--port", "8080"),
    (
        "model-source-org-model",
        {"model": {"name": "m", "source": "org/model"}},
        "--model",
        "org/model",
    ),
    (
        "served-model-name-chat",
        {"model": {"name": "chat", "source": "org/model"}},
        "--served-model-name",
        "chat",
    ),
    (
        "revision-v1",
        {"model": {"name": "m", "source": "org/model", "revision": "v1"}},
        "--revision",
        "v1",
    ),
    ("discover-port-50052", {"kvTransfer": {"port": 50052}}, "--discover-port", "50052"),
    (
        "min-remote-prefill-0",
        {"disaggregation": {"minRemotePrefillTokens": 0}},
        "--min-remote-prefill-tokens",
        "0",
    ),
    ("kv-timeout-5", {"kvTransfer": {"timeoutSeconds": 5}}, "--kv-timeout", "5"),
]


@pytest.mark.parametrize(
    ("overrides", "name", "value"),
    [case[1:] for case in ROUTER_ARG_CASES],
    ids=[case[0] for case in ROUTER_ARG_CASES],
)
def test_router_arg_follows_spec(overrides, name, value):
    assert flag(container(make_body(**overrides), "router")["args"], name) == value


def test_router_without_revision_has_no_flag():
    assert "--revision" not in container(make_body(), "router")["args"]


def test_router_discovers_own_namespace():
    args = container(make_body(name="llama", namespace="inference"), "router")["args"]
    assert flag(args, "--discover") == "llama.inference"


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_worker_probes_on_metrics_port(role):
    c = container(make_body(metricsPort=9100), role)
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in c["ports"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}
    assert c["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "metrics"}


def test_worker_grpc_port_exposed():
    c = container(make_body(kvTransfer={"port": 50052}), "prefill")
    assert {"name": "grpc", "containerPort": 50052, "protocol": "TCP"} in c["ports"]


def test_router_probes_on_http_port():
    c = container(make_body(router={"port": 8080}), "router")
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_router_liveness_ignores_decode_health():
    # /health fails while no decode replica is ready; that must not restart the router.
    c = container(make_body(), "router")
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert c["startupProbe"]["tcpSocket"] == {"port": "http"}
    assert "httpGet" not in c["livenessProbe"]


def test_startup_probe_allows_600s_model_load():
    probe = container(make_body(), "decode")["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] == 600


@pytest.mark.parametrize(
    ("drain", "grace"), [(0, 15), (60, 75), (300, 315)], ids=["drain-0", "drain-60", "drain-300"]
)
def test_grace_period_covers_pre_stop_and_drain(drain, grace):
    spec = pod_spec(make_body(prefill={"drainTimeoutSeconds": drain}), "prefill")
    assert spec["terminationGracePeriodSeconds"] == grace
    assert spec["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}


@pytest.mark.parametrize("role", ["prefill", "decode", "router"])
def test_container_security_context(role):
    assert container(make_body(), role)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@pytest.mark.parametrize("role", ["prefill", "decode", "router"])
def test_pod_security_context_non_root(role):
    context = pod_spec(make_body(), role)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("role", ["prefill", "decode", "router"])
def test_writable_tmp_and_model_cache(role):
    spec = pod_spec(make_body(), role)
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts) == {"/tmp", "/var/cache/disagg"}
    for name in mounts.values():
        assert volumes[name]["emptyDir"] == {}


def test_pods_do_not_mount_api_token():
    assert pod_spec(make_body(), "decode")["automountServiceAccountToken"] is False


def test_env_has_pod_identity_and_cache():
    env = {e["name"]: e for e in container(make_body(), "decode")["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["HF_HOME"]["value"] == "/var/cache/disagg/huggingface"


def test_spec_env_appended_and_overrides_builtin():
    extra = [{"name": "HF_HOME", "value": "/models"}, {"name": "LOG_LEVEL", "value": "debug"}]
    env = container(make_body(decode={"env": extra}), "decode")["env"]
    names = [e["name"] for e in env]
    assert names.count("HF_HOME") == 1
    assert env[-2:] == extra


def test_router_env_from_router_spec_only():
    token = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    body = make_body(router={"env": [token]}, decode={"env": [{"name": "POOL_ONLY", "value": "1"}]})
    env = container(body, "router")["env"]
    names = [e["name"] for e in env]
    assert env[-1] == token
    assert "POOL_ONLY" not in names


def test_router_env_overrides_builtin():
    body = make_body(router={"env": [{"name": "HF_HOME", "value": "/models"}]})
    env = [e for e in container(body, "router")["env"] if e["name"] == "HF_HOME"]
    assert env == [{"name": "HF_HOME", "value": "/models"}]


def test_image_and_pull_policy_per_pool():
    body = make_body(imagePullPolicy="Always", prefill={"image": "disagg-worker:0.2.0"})
    assert container(body, "prefill")["image"] == "disagg-worker:0.2.0"
    assert container(body, "decode")["image"] == "disagg-worker:0.1.0"
    assert container(body, "router")["imagePullPolicy"] == "Always"


def test_image_pull_secrets_on_every_pod():
    body = make_body(imagePullSecrets=[{"name": "registry"}])
    for role in ("prefill", "decode", "router"):
        assert pod_spec(body, role)["imagePullSecrets"] == [{"name": "registry"}]


FULL_SPEC = {
    "model": {"name": "m", "source": "org/model", "revision": "v1"},
    "kvTransfer": {"port": 50052, "timeoutSeconds": 5, "maxMessageBytes": 8388608},
    "metricsPort": 9100,
    "decode": {"maxBatch": 32, "maxQueue": 48, "drainTimeoutSeconds": 90},
}


@pytest.mark.parametrize("role", ["prefill", "decode", "router"])
def test_args_accepted_by_disagg_cli(role):
    # The arguments are a contract with `disagg worker` and `disagg router`:
    # the real parser must accept every flag and value.
    from disagg_worker.cli import build_parser

    c = container(make_body(**FULL_SPEC), role)
    parsed = build_parser().parse_args(c["args"])
    assert parsed.command == ("router" if role == "router" else "worker")


def test_decode_args_parse_to_spec_values():
    from disagg_worker.cli import build_parser

    parsed = build_parser().parse_args(container(make_body(**FULL_SPEC), "decode")["args"])
    assert parsed.role == "decode"
    assert parsed.model == "org/model"
    assert parsed.revision == "v1"
    assert parsed.grpc_port == 50052
    assert parsed.metrics_port == 9100
    assert parsed.max_batch == 32
    assert parsed.max_queue == 48
    assert parsed.max_message_bytes == 8388608
    assert parsed.kv_timeout == 5
    assert parsed.drain_timeout == 90


def test_router_args_parse_to_spec_values():
    from disagg_worker.cli import build_parser

    parsed = build_parser().parse_args(container(make_body(**FULL_SPEC), "router")["args"])
    assert parsed.model == "org/model"
    assert parsed.served_model_name == "m"
    assert parsed.revision == "v1"
    assert parsed.discover == "demo.models"
    assert parsed.discover_port == 50052
    assert parsed.kv_timeout == 5
