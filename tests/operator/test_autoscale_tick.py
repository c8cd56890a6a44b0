"""One autoscaler tick against kmock, with each pod's /metrics served over real HTTP."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import yaml
from autoscale_support import FakePods, autoscaled_spec, free_port, harness, router_text
from disagg_operator import autoscale, metrics_source
from disagg_operator import constants as c
from disagg_operator.kube import DEPLOYMENTS as DEPLOYMENT_RESOURCE
from runtime_support import DEPLOYMENTS, NAME, NAMESPACE, events, live

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "disagg.dev_disaggregateddeployments.yaml"
TICK_LOGGER = "test.autoscale.tick"


@pytest.fixture
async def pods(cluster):
    fake = FakePods(cluster, free_port())
    yield fake
    await fake.close()


@pytest.fixture
async def scaler(cluster):
    async with harness(cluster) as instance:
        yield instance


def replicas(cluster, role: str) -> int:
    return live(cluster, DEPLOYMENTS, f"{NAME}-{role}")["spec"]["replicas"]


async def test_queue_builds_scales_prefill_up(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=11, in_flight=1)
    await pods.add("decode", queue_depth=4, in_flight=16)
    await pods.add("decode", queue_depth=4, in_flight=16)

    await scaler.tick()

    assert replicas(cluster, "prefill") == 3
    assert replicas(cluster, "decode") == 2


async def test_scale_up_writes_status(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=11, in_flight=1)
    await pods.add("decode", queue_depth=4)
    await pods.add("decode", queue_depth=4)

    await scaler.tick()

    prefill = scaler.status("prefill")
    assert prefill["desiredReplicas"] == 3
    assert prefill["queueDepth"] == 11
    assert prefill["lastScaleReason"].startswith("prefill 1→3: queue depth 11")
    assert autoscale.parse_time(prefill["lastScaleTime"]) == pytest.approx(time.time(), abs=30)
    decode = scaler.status("decode")
    assert decode["desiredReplicas"] == 2
    assert decode["queueDepth"] == 8
    assert "lastScaleReason" not in decode


async def test_scale_up_records_event(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=11, in_flight=1)
    await pods.add("decode", queue_depth=4)
    await pods.add("decode", queue_depth=4)

    await scaler.tick()

    scaled = events(cluster, reason=c.REASON_SCALED)
    assert [event["message"].split(":")[0] for event in scaled] == ["prefill 1→3"]
    assert "queue depth 11" in scaled[0]["message"]
    assert "target 4" in scaled[0]["message"]
    assert scaled[0]["type"] == c.EVENT_NORMAL
    assert scaled[0]["involvedObject"]["name"] == NAME


async def test_printer_columns_read_written_fields(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=11)
    await pods.add("decode", queue_depth=4)
    await pods.add("decode", queue_depth=4)

    await scaler.tick()

    crd = yaml.safe_load_all(CRD_PATH.read_text())
    columns = next(iter(crd))["spec"]["versions"][0]["additionalPrinterColumns"]
    pool_paths = [
        column["jsonPath"].split(".")[2:]
        for column in columns
        if column["jsonPath"].split(".")[2:3] in (["prefill"], ["decode"])
    ]
    assert ["prefill", "queueDepth"] in pool_paths
    assert ["decode", "queueDepth"] in pool_paths
    for role, field in pool_paths:
        assert field in scaler.status(role), f".status.{role}.{field}"


async def test_steady_load_writes_nothing_twice(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=4)
    await scaler.tick()
    requests_before = len(list(cluster))

    await scaler.tick()

    writes = [
        request
        for request in list(cluster)[requests_before:]
        if str(request.method.value) in ("POST", "PATCH")
    ]
    assert writes == []


async def test_all_metrics_scale_decode_down(cluster, pods, scaler):
    # The control case of the missing-metrics tests below: with every pod
    # responding and no queue, decode shrinks at once.
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=0)
    await pods.add("decode", queue_depth=0)

    await scaler.tick()

    assert replicas(cluster, "decode") == 1


async def test_pod_down_holds_scale_down(cluster, pods, scaler, caplog):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=0)
    silent = await pods.add("decode", queue_depth=0)
    await silent.stop_server()

    with caplog.at_level(logging.INFO):
        await scaler.tick(logger=logging.getLogger(TICK_LOGGER))

    assert replicas(cluster, "decode") == 2
    assert "decode hold at 2: metrics from 1 of 2 ready replicas, no scale-down" in caplog.text
    assert f"pod={silent.name}" in caplog.text
    assert events(cluster, reason=c.REASON_SCALED) == []


async def test_pod_down_reports_partial_queue(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=3)
    silent = await pods.add("decode", queue_depth=5)
    await silent.stop_server()

    await scaler.tick()

    assert scaler.status("decode")["queueDepth"] == 3


async def test_malformed_metrics_hold_scale_down(cluster, pods, scaler, caplog):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=0)
    broken = await pods.add("decode", queue_depth=0)
    broken.text = "<html>502 Bad Gateway</html>\n"

    with caplog.at_level(logging.INFO):
        await scaler.tick(logger=logging.getLogger(TICK_LOGGER))

    assert replicas(cluster, "decode") == 2
    assert "decode hold at 2" in caplog.text
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == metrics_source.__name__ and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert f"pod={broken.name}" in warnings[0]
    assert "invalid Prometheus text" in warnings[0]


async def test_missing_metrics_still_scale_up(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=20)
    silent = await pods.add("decode", queue_depth=0)
    await silent.stop_server()

    await scaler.tick()

    # The responding pod alone already carries 5 replicas of load; max is 4.
    assert replicas(cluster, "decode") == 4


async def test_external_mode_leaves_replicas(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port, mode="external"))
    await pods.add("prefill", queue_depth=30)
    await pods.add("decode", queue_depth=0)
    await pods.add("decode", queue_depth=0)

    await scaler.tick()

    assert replicas(cluster, "prefill") == 1
    assert replicas(cluster, "decode") == 2
    assert events(cluster, reason=c.REASON_SCALED) == []


async def test_external_mode_reports_queue_depth(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port, mode="external"))
    await pods.add("prefill", queue_depth=30)
    await pods.add("decode", queue_depth=2)
    await pods.add("decode", queue_depth=5)

    await scaler.tick()

    assert scaler.status("prefill")["queueDepth"] == 30
    assert scaler.status("decode")["queueDepth"] == 7
    # desiredReplicas stays what the reconcile copied from the Deployment.
    assert scaler.status("prefill")["desiredReplicas"] == 1
    assert "lastScaleReason" not in scaler.status("prefill")


async def test_off_mode_changes_nothing(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port, mode="off"))
    await pods.add("prefill", queue_depth=30)
    await pods.add("decode", queue_depth=0)
    await pods.add("decode", queue_depth=0)
    requests_before = len(list(cluster))

    await scaler.tick()

    assert replicas(cluster, "prefill") == 1
    assert replicas(cluster, "decode") == 2
    assert "queueDepth" not in scaler.status("prefill")
    assert len(list(cluster)) == requests_before


async def test_silent_pool_clears_queue_depth(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    prefill = await pods.add("prefill", queue_depth=4)
    await pods.add("decode", queue_depth=4)
    await scaler.tick()
    assert scaler.status("prefill")["queueDepth"] == 4

    await prefill.stop_server()
    await scaler.tick()

    # An unknown queue depth shows as empty, not as the last value read.
    assert "queueDepth" not in scaler.status("prefill")


async def test_restart_keeps_scale_down_window(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port, scaleDownStabilizationSeconds=300))
    prefill = await pods.add("prefill", queue_depth=11)
    await pods.add("decode", queue_depth=4)
    start = time.time() + 1000
    await scaler.tick(clock=lambda: start)
    assert replicas(cluster, "prefill") == 3

    # A new operator process 100 s later: the queue is empty, but the status
    # records that prefill scaled up 100 s ago, inside the 300 s window.
    prefill.load(queue_depth=0)
    scaler.restart()
    await scaler.tick(clock=lambda: start + 100)
    held = replicas(cluster, "prefill")

    scaler.restart()
    await scaler.tick(clock=lambda: start + 400)

    assert held == 3
    assert replicas(cluster, "prefill") == 1


async def test_prefill_scales_from_zero_on_fallbacks(cluster, pods, scaler):
    router_port = free_port()
    spec = autoscaled_spec(pods.port)
    spec["prefill"].update({"replicas": 0, "minReplicas": 0})
    spec["router"]["port"] = router_port
    await scaler.create(spec)
    await pods.add("decode", queue_depth=4)
    router = await pods.add("router", port=router_port)
    router.text = router_text(no_prefill_replica=2)

    # The first read only sets the baseline: fallbacks before it are old.
    await scaler.tick()
    at_baseline = replicas(cluster, "prefill")
    router.text = router_text(no_prefill_replica=5)
    await scaler.tick()

    assert at_baseline == 0
    assert replicas(cluster, "prefill") == 1
    assert "3 local-prefill fallbacks" in scaler.status("prefill")["lastScaleReason"]


class _RacingSource(metrics_source.PodScrapeSource):
    """Scrapes normally, but first sets the prefill replicas as an HPA or a user would."""

    def __init__(self, kube, replicas: int) -> None:
        super().__init__()
        self.kube = kube
        self.replicas = replicas

    async def observe(self, pods, now):
        await self.kube.patch(
            DEPLOYMENT_RESOURCE, NAMESPACE, f"{NAME}-prefill", {"spec": {"replicas": self.replicas}}
        )
        return await super().observe(pods, now)


async def test_concurrent_replica_change_wins(cluster, pods, scaler):
    await scaler.create(autoscaled_spec(pods.port))
    await pods.add("prefill", queue_depth=11)
    await pods.add("decode", queue_depth=4)

    await scaler.tick(source=_RacingSource(scaler.kube, replicas=2))

    assert replicas(cluster, "prefill") == 2
    failed = events(cluster, reason=c.REASON_SCALE_FAILED)
    assert len(failed) == 1
    assert "HTTP 422" in failed[0]["message"]
    assert "lastScaleReason" not in scaler.status("prefill")
