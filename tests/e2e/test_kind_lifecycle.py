"""One DisaggregatedDeployment through its whole life on a kind cluster.

The CPU example (examples/cpu-kind.yaml) is applied with each pool pinned to
its fake GPU node, served through a port-forward to the router, loaded until
the prefill pool scales up, left idle until it scales back, and deleted. The
tests run in file order and share the resource.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from disagg_operator import constants
from e2e_support import HELM_NAMESPACE, HELM_RELEASE, REPO_ROOT, port_forward, wait_for
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

NAMESPACE = "disagg-e2e"
EXAMPLE = REPO_ROOT / "examples" / "cpu-kind.yaml"
PRODUCT_LABEL = "nvidia.com/gpu.product"
NODE_PRODUCTS = {constants.ROLE_PREFILL: "FAKE-PREFILL", constants.ROLE_DECODE: "FAKE-DECODE"}
# Short enough for the test to see a scale-down within minutes.
SCALE_DOWN_STABILIZATION_SECONDS = 30

# Seconds to wait for each stage.
AVAILABLE_TIMEOUT = 900
SCALE_UP_TIMEOUT = 600
SCALE_DOWN_TIMEOUT = 600
DELETE_TIMEOUT = 300
REQUEST_TIMEOUT = 300

# 651 prompt tokens with the SmolLM2 tokenizer: above the example's
# minRemotePrefillTokens (128), so the router sends each request to the
# prefill pool, and long enough on CPU that requests queue there.
LONG_PROMPT = "Disaggregated serving splits prefill and decode into separate pools. " * 50
LOAD_CONCURRENCY = 12
MODEL_NAME = yaml.safe_load(EXAMPLE.read_text())["spec"]["model"]["name"]
ROUTER_PORT = constants.DEFAULT_ROUTER_PORT

# Facts one test leaves for the next: the tests run in file order.
observed: dict[str, int] = {}


def _manifest() -> dict:
    """Return the CPU example, in the test namespace, each pool pinned to its fake GPU node."""
    manifest = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    manifest["metadata"]["namespace"] = NAMESPACE
    for role, product in NODE_PRODUCTS.items():
        manifest["spec"][role]["nodeSelector"] = {PRODUCT_LABEL: product}
    manifest["spec"]["prefill"]["minReplicas"] = 1
    manifest["spec"]["prefill"]["replicas"] = 1
    manifest["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] = (
        SCALE_DOWN_STABILIZATION_SECONDS
    )
    return manifest


def _name() -> str:
    return _manifest()["metadata"]["name"]


def _router_target() -> str:
    return f"svc/{constants.router_name(_name())}"


def _post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
        return json.loads(response.read())


def _condition_status(resource: dict, condition_type: str) -> str | None:
    for condition in resource.get("status", {}).get("conditions", []):
        if condition["type"] == condition_type:
            return condition["status"]
    return None


def _pool_replicas(kubectl, role: str) -> int:
    deployment = kubectl.json(
        "-n", NAMESPACE, "get", "deployment", constants.child_name(_name(), role)
    )
    return int(deployment["spec"]["replicas"])


def _remote_prefills(url: str) -> float:
    """Return how many first tokens the router has seen from remote prefill."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "disagg_time_to_first_token_seconds":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name.endswith("_count") and sample.labels.get("prefill") == "remote"
            )
    return 0.0


@pytest.fixture(scope="module")
def kubectl(kind_cluster):
    namespace = kind_cluster("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml")
    kind_cluster("apply", "-f", "-", input_text=namespace)
    return kind_cluster


def test_operator_rolled_out(kubectl):
    output = kubectl(
        "-n",
        HELM_NAMESPACE,
        "rollout",
        "status",
        f"deployment/{HELM_RELEASE}",
        "--timeout=300s",
        timeout=320,
    )
    assert "successfully rolled out" in output


def test_resource_becomes_available(kubectl):
    kubectl.apply(_manifest())

    def available():
        resource = kubectl.json("-n", NAMESPACE, "get", constants.PLURAL, _name())
        return _condition_status(resource, constants.CONDITION_AVAILABLE) == "True"

    wait_for(available, timeout=AVAILABLE_TIMEOUT, interval=5, description="Available=True")


def test_children_carry_owner_reference(kubectl):
    resource = kubectl.json("-n", NAMESPACE, "get", constants.PLURAL, _name())
    for kind, role in [("deployment", r) for r in constants.ROLES] + [
        ("service", r) for r in constants.ROLES
    ]:
        child = kubectl.json("-n", NAMESPACE, "get", kind, constants.child_name(_name(), role))
        owners = child["metadata"]["ownerReferences"]
        assert [owner["uid"] for owner in owners] == [resource["metadata"]["uid"]], kind


@pytest.mark.parametrize("role", sorted(NODE_PRODUCTS))
def test_pool_runs_on_its_node(kubectl, role):
    pods = kubectl.json(
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        f"{constants.LABEL_DEPLOYMENT}={_name()},{constants.LABEL_ROLE}={role}",
    )["items"]
    assert pods, f"no {role} pods"
    for pod in pods:
        node = kubectl.json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"][PRODUCT_LABEL] == NODE_PRODUCTS[role]


def test_completion_through_router(kubectl):
    payload = {"model": MODEL_NAME, "prompt": "The capital of France is", "max_tokens": 8}
    with port_forward(kubectl, NAMESPACE, _router_target(), ROUTER_PORT) as url:
        reply = _post_json(f"{url}/v1/completions", payload)
    assert reply["choices"][0]["text"].strip()


def test_long_chat_prefilled_remotely(kubectl):
    payload = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": LONG_PROMPT + "Summarize this."}],
        "max_tokens": 8,
    }
    threshold = _manifest()["spec"]["disaggregation"]["minRemotePrefillTokens"]
    with port_forward(kubectl, NAMESPACE, _router_target(), ROUTER_PORT) as url:
        before = _remote_prefills(url)
        reply = _post_json(f"{url}/v1/chat/completions", payload)
        after = _remote_prefills(url)
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["usage"]["prompt_tokens"] > threshold
    assert after == before + 1


def _send_load(url: str, stop: threading.Event, outcomes: dict[str, int]) -> None:
    while not stop.is_set():
        try:
            _post_json(
                f"{url}/v1/completions",
                {"model": MODEL_NAME, "prompt": LONG_PROMPT, "max_tokens": 4},
            )
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            # 429 (queues full) and dropped forwards are expected under overload.
            key = f"error {getattr(error, 'code', type(error).__name__)}"
            outcomes[key] = outcomes.get(key, 0) + 1


def test_prefill_scales_up_under_load(kubectl):
    before = _pool_replicas(kubectl, constants.ROLE_PREFILL)
    maximum = _manifest()["spec"]["prefill"]["maxReplicas"]
    stop = threading.Event()
    outcomes: dict[str, int] = {}

    def scaled_up() -> int | None:
        replicas = _pool_replicas(kubectl, constants.ROLE_PREFILL)
        return replicas if replicas > before else None

    with (
        port_forward(kubectl, NAMESPACE, _router_target(), ROUTER_PORT) as url,
        ThreadPoolExecutor(LOAD_CONCURRENCY) as pool,
    ):
        for _ in range(LOAD_CONCURRENCY):
            pool.submit(_send_load, url, stop, outcomes)
        try:
            peak = wait_for(
                scaled_up,
                timeout=SCALE_UP_TIMEOUT,
                interval=5,
                description=f"prefill pool above {before} replicas",
            )
        finally:
            stop.set()
    logger.info("load outcomes=%s", outcomes)
    observed["peak"] = peak
    assert outcomes.get("ok", 0) > 0
    assert before < peak <= maximum


def test_prefill_scales_back_when_idle(kubectl):
    if "peak" not in observed:
        pytest.fail("the prefill pool never scaled up, so there is no scale-down to see")
    minimum = _manifest()["spec"]["prefill"]["minReplicas"]
    wait_for(
        lambda: _pool_replicas(kubectl, constants.ROLE_PREFILL) == minimum,
        timeout=SCALE_DOWN_TIMEOUT,
        interval=5,
        description=f"prefill pool back to {minimum} replicas",
    )
    assert _pool_replicas(kubectl, constants.ROLE_PREFILL) == minimum


def test_delete_removes_every_child(kubectl):
    kubectl(
        "-n",
        NAMESPACE,
        "delete",
        constants.PLURAL,
        _name(),
        "--wait=true",
        "--timeout=120s",
        timeout=150,
    )
    selector = f"{constants.LABEL_DEPLOYMENT}={_name()}"

    def children_gone():
        listed = kubectl.json(
            "-n", NAMESPACE, "get", "deployments,services,pods,poddisruptionbudgets", "-l", selector
        )
        return not listed["items"]

    wait_for(children_gone, timeout=DELETE_TIMEOUT, interval=5, description="children deleted")
