"""ServiceMonitor, PodMonitor and the Grafana dashboard match the pods the operator builds.

The monitoring.coreos.com kinds have no schema in kubernetes-validate, so the
checks here are structural. The selectors must match the labels and port names
that the operator's builders put on workers and routers. Every metric the
dashboard queries must be one that a worker or the router exports.
"""

from __future__ import annotations

import json
import re

import pytest
from chart_support import CHART_DIR, built_children
from disagg_operator import constants
from disagg_worker import metrics
from disagg_worker.router.metrics import RouterMetrics

MONITOR_VALUES = {
    "ServiceMonitor": {"metrics": {"serviceMonitor": {"enabled": True}}},
    "PodMonitor": {"metrics": {"podMonitor": {"enabled": True}}},
}
ENDPOINTS_KEY = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}
TARGET_LABELS_KEY = {"ServiceMonitor": "targetLabels", "PodMonitor": "podTargetLabels"}
DASHBOARD_FILE = CHART_DIR / "files" / "disagg-dashboard.json"

# Metrics the dashboard must chart, as exposed on /metrics (counters with _total).
REQUIRED_DASHBOARD_METRICS = (
    "disagg_queue_depth",
    "disagg_inflight_requests",
    "disagg_time_to_first_token_seconds",
    "disagg_inter_token_latency_seconds",
    "disagg_request_duration_seconds",
    "disagg_kv_transfer_bytes_total",
    "disagg_kv_transfer_seconds",
    "disagg_kv_transfer_failures_total",
    "disagg_local_prefill_total",
)


# Prometheus turns the targetLabels disagg.dev/deployment and disagg.dev/role
# into these label names; the dashboard groups pools by them.
TARGET_LABEL_PREFIX = "disagg_dev_"


def _exported_metric_names() -> set[str]:
    """Return every series name a worker or router exposes, counters with their _total suffix."""
    registries = [
        metrics.WorkerMetrics(constants.ROLE_PREFILL).registry,
        RouterMetrics().registry,
    ]
    names = set()
    for registry in registries:
        for family in registry.collect():
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
    return names


def _dashboard_expressions(dashboard) -> list[str]:
    expressions = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expressions.append(target["expr"])
    return expressions


@pytest.mark.parametrize("kind", MONITOR_VALUES)
def test_monitor_selects_operator_children(render, kind):
    monitor = render(MONITOR_VALUES[kind]).one(kind)
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector[constants.LABEL_NAME] == constants.APP_NAME
    assert selector[constants.LABEL_MANAGED_BY] == constants.MANAGER_NAME


@pytest.mark.parametrize("kind", MONITOR_VALUES)
def test_monitor_scrapes_metrics_and_router_ports(render, kind):
    monitor = render(MONITOR_VALUES[kind]).one(kind)
    endpoints = monitor["spec"][ENDPOINTS_KEY[kind]]
    ports = [endpoint["port"] for endpoint in endpoints]
    assert ports == [constants.PORT_NAME_METRICS, constants.PORT_NAME_HTTP]
    assert {endpoint["path"] for endpoint in endpoints} == {"/metrics"}


@pytest.mark.parametrize("kind", MONITOR_VALUES)
def test_monitor_keeps_pool_labels(render, kind):
    monitor = render(MONITOR_VALUES[kind]).one(kind)
    target_labels = monitor["spec"][TARGET_LABELS_KEY[kind]]
    assert target_labels == [constants.LABEL_DEPLOYMENT, constants.LABEL_ROLE]


def test_service_monitor_covers_every_role(render):
    monitor = render(MONITOR_VALUES["ServiceMonitor"]).one("ServiceMonitor")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expression["key"] == constants.LABEL_ROLE
    assert sorted(expression["values"]) == sorted(constants.ROLES)


@pytest.mark.parametrize("kind", MONITOR_VALUES)
def test_monitor_watches_every_namespace(render, kind):
    monitor = render(MONITOR_VALUES[kind]).one(kind)
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def test_monitor_limited_to_watched_namespaces(render):
    values = {
        "clusterWide": False,
        "watchNamespaces": ["team-a", "team-b"],
        **MONITOR_VALUES["PodMonitor"],
    }
    monitor = render(values).one("PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_monitor_carries_extra_labels(render):
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    monitor = render(values).one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"


def test_monitors_off_by_default(render):
    rendered = render()
    assert rendered.of_kind("ServiceMonitor") == []
    assert rendered.of_kind("PodMonitor") == []


def test_dashboard_config_map_holds_file(render):
    values = {"grafanaDashboard": {"enabled": True, "namespace": "monitoring"}}
    config_map = render(values).one("ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["disagg.json"]) == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_off_by_default(render):
    assert render().of_kind("ConfigMap") == []


@pytest.mark.parametrize("metric", REQUIRED_DASHBOARD_METRICS)
def test_dashboard_charts_metric(metric):
    expressions = _dashboard_expressions(json.loads(DASHBOARD_FILE.read_text()))
    assert any(re.search(rf"\b{metric}(_bucket)?\b", expr) for expr in expressions)


def test_dashboard_queries_exported_metrics():
    exported = _exported_metric_names()
    expressions = _dashboard_expressions(json.loads(DASHBOARD_FILE.read_text()))
    queried = set()
    for expression in expressions:
        names = re.findall(r"\bdisagg_[a-z_]+", expression)
        queried |= {name for name in names if not name.startswith(TARGET_LABEL_PREFIX)}
    histogram_series = {name + "_bucket" for name in exported}
    assert queried - exported - histogram_series == set()


def test_dashboard_panel_ids_unique():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    """Return whether a LabelSelector (matchLabels and In expressions) selects `labels`."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _scraped_ports(monitor_kind: str, rendered) -> set[str]:
    monitor = rendered.one(monitor_kind)
    return {endpoint["port"] for endpoint in monitor["spec"][ENDPOINTS_KEY[monitor_kind]]}


@pytest.mark.parametrize("role", constants.ROLES)
def test_pod_monitor_scrapes_built_pods(render, role):
    rendered = render(MONITOR_VALUES["PodMonitor"])
    monitor = rendered.one("PodMonitor")
    (deployment,) = [
        child
        for child in built_children()
        if child["kind"] == "Deployment"
        and child["metadata"]["labels"][constants.LABEL_ROLE] == role
    ]
    template = deployment["spec"]["template"]
    port_names = {
        port["name"]
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert _matches(monitor["spec"]["selector"], template["metadata"]["labels"])
    assert port_names & _scraped_ports("PodMonitor", rendered)


@pytest.mark.parametrize("role", constants.ROLES)
def test_service_monitor_scrapes_built_services(render, role):
    rendered = render(MONITOR_VALUES["ServiceMonitor"])
    monitor = rendered.one("ServiceMonitor")
    (service,) = [
        child
        for child in built_children()
        if child["kind"] == "Service" and child["metadata"]["labels"][constants.LABEL_ROLE] == role
    ]
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert _matches(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert port_names & _scraped_ports("ServiceMonitor", rendered)
