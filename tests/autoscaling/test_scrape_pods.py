"""PodScrapeSource reads each pod's /metrics over real HTTP and reports bad pods as missing."""

from __future__ import annotations

import logging
import time

import pytest
from disagg_operator import metrics_source
from disagg_operator.metrics_source import PodScrapeSource, PodTarget
from disagg_worker import metrics as worker_metrics
from scrape_support import MetricsServer, router_text, worker_text

NOW = 1000.0


@pytest.fixture
async def servers():
    """Start MetricsServers on 127.0.0.2, 127.0.0.3, ... sharing one port; stop them after."""
    started: list[MetricsServer] = []

    async def start(count: int) -> list[MetricsServer]:
        port = started[0].port if started else 0
        for _ in range(count):
            host = f"127.0.0.{len(started) + 2}"
            server = await MetricsServer(host, port).start()
            port = server.port
            started.append(server)
        return started[-count:]

    yield start
    for server in started:
        await server.stop()


def target(server: MetricsServer, role: str = "prefill", name: str | None = None) -> PodTarget:
    return PodTarget(name=name or f"pod-{server.host}", ip=server.host, port=server.port, role=role)


def test_metric_names_match_the_worker():
    assert metrics_source.QUEUE_DEPTH_METRIC == worker_metrics.QUEUE_DEPTH
    assert metrics_source.INFLIGHT_METRIC == worker_metrics.INFLIGHT_REQUESTS
    assert metrics_source.LOCAL_PREFILL_METRIC == worker_metrics.LOCAL_PREFILL


async def test_observe_reads_queue_and_in_flight(servers):
    (server,) = await servers(1)
    server.text = worker_text("prefill", queue_depth=7, in_flight=1)

    observed = await PodScrapeSource().observe([target(server, name="p0")], NOW)

    observation = observed["p0"]
    assert observation is not None
    assert observation.replica == "p0"
    assert observation.queue_depth == 7
    assert observation.in_flight == 1
    assert observation.time == NOW


async def test_observe_reads_every_pod(servers):
    first, second, third = await servers(3)
    first.text = worker_text("decode", 0, 16)
    second.text = worker_text("decode", 3, 16)
    third.text = worker_text("prefill", 5, 1)
    pods = [target(first, "decode"), target(second, "decode"), target(third, "prefill")]

    observed = await PodScrapeSource().observe(pods, NOW)

    assert [observed[pod.name].queue_depth for pod in pods] == [0, 3, 5]
    assert [observed[pod.name].in_flight for pod in pods] == [16, 16, 1]


async def test_observe_reads_only_the_pool_role(servers):
    (server,) = await servers(1)
    # A decode replica's text read as a prefill pod has no prefill sample.
    server.text = worker_text("decode", 3, 2)

    observed = await PodScrapeSource().observe([target(server, "prefill", "p0")], NOW)

    assert observed["p0"] is None


async def test_pod_down_is_missing(servers, caplog):
    (server,) = await servers(1)
    pod = target(server, name="p0")
    await server.stop()

    with caplog.at_level(logging.WARNING, logger=metrics_source.__name__):
        observed = await PodScrapeSource().observe([pod], NOW)

    assert observed == {"p0": None}
    assert "pod=p0" in caplog.text
    assert "missing data" in caplog.text


async def test_malformed_text_is_missing(servers, caplog):
    (server,) = await servers(1)
    server.text = 'disagg_queue_depth{role="prefill"} many\n'

    with caplog.at_level(logging.WARNING, logger=metrics_source.__name__):
        observed = await PodScrapeSource().observe([target(server, name="p0")], NOW)

    assert observed == {"p0": None}
    assert "invalid Prometheus text" in caplog.text
    assert "pod=p0" in caplog.text


async def test_missing_metric_is_missing(servers, caplog):
    (server,) = await servers(1)
    server.text = 'disagg_inflight_requests{role="prefill"} 1.0\n'

    with caplog.at_level(logging.WARNING, logger=metrics_source.__name__):
        observed = await PodScrapeSource().observe([target(server, name="p0")], NOW)

    assert observed == {"p0": None}
    assert "metric disagg_queue_depth is missing" in caplog.text


async def test_negative_gauge_is_missing(servers):
    (server,) = await servers(1)
    server.text = (
        'disagg_queue_depth{role="prefill"} -1.0\ndisagg_inflight_requests{role="prefill"} 0.0\n'
    )

    observed = await PodScrapeSource().observe([target(server, name="p0")], NOW)

    assert observed == {"p0": None}


async def test_http_error_is_missing(servers, caplog):
    (server,) = await servers(1)
    server.text = worker_text("prefill", 1, 1)
    server.status = 503

    with caplog.at_level(logging.WARNING, logger=metrics_source.__name__):
        observed = await PodScrapeSource().observe([target(server, name="p0")], NOW)

    assert observed == {"p0": None}
    assert "HTTP 503" in caplog.text


async def test_slow_pod_times_out_alone(servers):
    slow, fast = await servers(2)
    slow.text = worker_text("prefill", 1, 1)
    slow.delay = 5.0
    fast.text = worker_text("prefill", 2, 1)
    source = PodScrapeSource(timeout_seconds=0.3)

    started = time.monotonic()
    observed = await source.observe([target(slow, name="slow"), target(fast, name="fast")], NOW)
    elapsed = time.monotonic() - started

    assert observed["slow"] is None
    assert observed["fast"].queue_depth == 2
    # Scrapes run at once: the slow pod costs one timeout, not its whole delay.
    assert elapsed < 3.0


async def test_router_total_counts_no_prefill_replica(servers):
    (server,) = await servers(1)
    server.text = router_text(no_prefill_replica=5, short_prompt=40)

    totals = await PodScrapeSource().local_prefill_totals([target(server, "router", "r0")])

    assert totals == {"r0": 5.0}


async def test_router_without_fallbacks_reads_zero(servers):
    (server,) = await servers(1)
    server.text = router_text(no_prefill_replica=0, short_prompt=3)

    totals = await PodScrapeSource().local_prefill_totals([target(server, "router", "r0")])

    assert totals == {"r0": 0.0}


async def test_router_without_counter_is_missing(servers):
    (server,) = await servers(1)
    server.text = worker_text("decode", 0, 0).replace("disagg_local_prefill", "other_metric")

    totals = await PodScrapeSource().local_prefill_totals([target(server, "router", "r0")])

    assert totals == {"r0": None}


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="invalid scrape timeout 0"):
        PodScrapeSource(timeout_seconds=0)


def test_ipv6_target_url_has_brackets():
    pod = PodTarget(name="p0", ip="fd00::5", port=9090, role="decode")

    assert pod.url == "http://[fd00::5]:9090/metrics"
