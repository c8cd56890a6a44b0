"""The operator Deployment: hardened pods, the liveness probe, peering and watched namespaces."""

from __future__ import annotations

import pytest
from chart_support import VALUE_CASES
from disagg_operator import commands_operator
from disagg_worker.cli import build_parser


def _pod_specs(rendered):
    """Yield (where, pod spec) for every pod the chart creates, chart test pod included."""
    for deployment in rendered.of_kind("Deployment"):
        yield f"Deployment/{deployment['metadata']['name']}", deployment["spec"]["template"]["spec"]
    for pod in rendered.of_kind("Pod"):
        yield f"Pod/{pod['metadata']['name']}", pod["spec"]


@pytest.mark.parametrize("case", VALUE_CASES)
def test_pods_run_as_non_root(render, case):
    for where, pod in _pod_specs(render(VALUE_CASES[case])):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where


@pytest.mark.parametrize("case", VALUE_CASES)
def test_containers_are_locked_down(render, case):
    for where, pod in _pod_specs(render(VALUE_CASES[case])):
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where


@pytest.mark.parametrize("case", VALUE_CASES)
def test_containers_have_resources(render, case):
    for where, pod in _pod_specs(render(VALUE_CASES[case])):
        for container in pod["containers"]:
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where


def test_liveness_probe_targets_liveness_endpoint(render):
    container = render({"operator": {"livenessPort": 8181}}).operator_container
    probe = container["livenessProbe"]["httpGet"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert "--liveness=http://0.0.0.0:8181/healthz" in container["args"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8181


def test_chart_test_pod_checks_liveness(render):
    rendered = render()
    pod = rendered.one("Pod")
    service = rendered.one("Service")
    script = pod["spec"]["containers"][0]["command"][-1]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert f"http://{service['metadata']['name']}.disagg-system.svc:8080/healthz" in script


def test_default_image_is_app_version(render, chart):
    container = render().operator_container
    assert container["image"] == f"disagg-operator:{chart.metadata['appVersion']}"


def test_cluster_wide_watches_all_namespaces(render):
    args = render().operator_container["args"]
    assert "--all-namespaces" in args
    assert not [arg for arg in args if arg.startswith("--namespace")]


def test_watch_namespaces_become_arguments(render):
    values = {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]}
    args = render(values).operator_container["args"]
    assert "--all-namespaces" not in args
    assert [arg for arg in args if arg.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_peering_name_defaults_to_full_name(render):
    rendered = render()
    deployment = rendered.one("Deployment")
    peering = rendered.one("ClusterKopfPeering")
    assert peering["metadata"]["name"] == deployment["metadata"]["name"]
    assert f"--peering={peering['metadata']['name']}" in rendered.operator_container["args"]


def test_peering_names_pod_by_pod_id(render):
    env = {item["name"]: item for item in render().operator_container["env"]}
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_namespaced_peering_per_namespace(render):
    values = {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]}
    rendered = render(values)
    peerings = rendered.of_kind("KopfPeering")
    assert sorted(item["metadata"]["namespace"] for item in peerings) == ["team-a", "team-b"]
    assert rendered.of_kind("ClusterKopfPeering") == []


def test_peering_off_runs_standalone(render):
    rendered = render({"peering": {"enabled": False}})
    args = rendered.operator_container["args"]
    assert "--standalone" in args
    assert not [arg for arg in args if arg.startswith("--peering")]
    assert rendered.of_kind("ClusterKopfPeering") == []


def test_peering_object_can_be_external(render):
    rendered = render({"peering": {"create": False, "name": "shared"}})
    assert "--peering=shared" in rendered.operator_container["args"]
    assert rendered.of_kind("ClusterKopfPeering") == []


def test_standby_replicas_spread_over_nodes(render):
    rendered = render({"replicas": 3})
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    assert terms[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_single_replica_has_no_default_affinity(render):
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in pod


def test_rollout_never_drops_below_replicas(render):
    strategy = render().one("Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_standalone_rollout_recreates(render):
    strategy = render({"peering": {"enabled": False}}).one("Deployment")["spec"]["strategy"]
    assert strategy == {"type": "Recreate"}


def test_extra_args_follow_chart_args(render):
    args = render({"operator": {"extraArgs": ["--resync-seconds=30"]}}).operator_container["args"]
    assert args[0] == "operator"
    assert args[-1] == "--resync-seconds=30"


def test_notes_name_next_commands(render):
    notes = render().notes
    assert "kubectl apply -f examples/cpu-kind.yaml" in notes
    assert "kubectl get dd -A -w" in notes


def test_notes_use_watched_namespace(render):
    notes = render({"clusterWide": False, "watchNamespaces": ["team-a"]}).notes
    assert "metadata.namespace must be a watched namespace (team-a)" in notes
    assert "kubectl get dd -n team-a -w" in notes


@pytest.mark.parametrize("case", VALUE_CASES)
def test_operator_args_parse_with_cli(render, case):
    container = render(VALUE_CASES[case]).operator_container
    assert container["args"][0] == "operator"

    args = build_parser().parse_args(container["args"])
    commands_operator.check_args(args)

    endpoint = commands_operator.liveness_endpoint(args)
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "health")
    assert endpoint == f"http://0.0.0.0:{port}{container['livenessProbe']['httpGet']['path']}"


def test_operator_args_name_scope_and_peering(render):
    values = {"clusterWide": False, "watchNamespaces": ["team-a", "team-b"]}
    rendered = render(values)
    args = build_parser().parse_args(rendered.operator_container["args"])
    peering_names = {item["metadata"]["name"] for item in rendered.of_kind("KopfPeering")}
    assert args.namespaces == ["team-a", "team-b"]
    assert args.all_namespaces is False
    assert args.standalone is False
    assert peering_names == {args.peering}


def test_operator_args_standalone_cluster_wide(render):
    rendered = render({"peering": {"enabled": False}})
    args = build_parser().parse_args(rendered.operator_container["args"])
    assert args.all_namespaces is True
    assert args.standalone is True
