"""The cluster model's timing on hand-computable traces."""

from __future__ import annotations

import pytest
from disagg_operator.policy import DECODE, PREFILL
from disagg_operator.simulate.cluster import DRAINING, STOPPED, Cluster, SimRequest
from disagg_operator.simulate.runner import Objectives, simulate
from disagg_operator.simulate.scalers import StaticScaler
from disagg_worker.traces import TraceRequest, synthetic_trace
from simulate_support import CALIBRATION


def run_cluster(cluster: Cluster, requests: list[SimRequest], until: float = 1000.0):
    for request in requests:
        cluster.schedule(request.arrival, cluster.arrive, request)
    cluster.run_until(until)
    return requests


def test_one_request_timing():
    cluster = Cluster(CALIBRATION, {PREFILL: 1, DECODE: 1})
    (request,) = run_cluster(cluster, [SimRequest(0, 0.0, 100, 5)])

    # 1 s prefill + 1 s KV transfer, then 4 steps at batch 1 of 0.1 s.
    assert request.ttft == pytest.approx(2.0)
    assert request.finish == pytest.approx(2.4)
    assert request.itl == pytest.approx(0.1)


def test_prefill_queue_is_fifo():
    cluster = Cluster(CALIBRATION, {PREFILL: 1, DECODE: 1})
    first, second = run_cluster(cluster, [SimRequest(0, 0.0, 100, 1), SimRequest(1, 0.0, 100, 1)])

    assert first.ttft == pytest.approx(2.0)
    assert second.ttft == pytest.approx(3.0)


def test_prefill_goes_to_least_loaded_replica():
    cluster = Cluster(CALIBRATION, {PREFILL: 2, DECODE: 1})
    _, second = run_cluster(cluster, [SimRequest(0, 0.0, 100, 1), SimRequest(1, 0.0, 100, 1)])

    assert second.ttft == pytest.approx(2.0)


def test_decode_batch_step_time():
    cluster = Cluster(CALIBRATION, {PREFILL: 2, DECODE: 1})
    first, second = run_cluster(cluster, [SimRequest(0, 0.0, 100, 3), SimRequest(1, 0.0, 100, 3)])

    # Both reach decode at 2.0 s. The first starts a step alone (0.1 s), the
    # second joins at the next step boundary: one step at batch 2 (0.15 s),
    # then the second runs its last step alone (0.1 s).
    assert first.finish == pytest.approx(2.25)
    assert second.finish == pytest.approx(2.35)
    assert second.itl == pytest.approx(0.175)


def test_full_batch_waits_for_slot():
    cluster = Cluster(CALIBRATION, {PREFILL: 5, DECODE: 1})
    requests = [SimRequest(i, 0.0, 100, 2) for i in range(5)]
    run_cluster(cluster, requests)

    # Four run one step at batch 4 (0.2 s); the fifth waits, then one step at batch 1.
    assert requests[4].finish == pytest.approx(2.0 + 0.2 + 0.1)


def test_local_prefill_without_prefill_replica():
    cluster = Cluster(CALIBRATION, {PREFILL: 0, DECODE: 1})
    (request,) = run_cluster(cluster, [SimRequest(0, 0.0, 100, 1)])

    assert request.remote_prefill is False
    assert request.ttft == pytest.approx(1.0)
    assert cluster.view(PREFILL).local_prefill_fallbacks == 1


def test_short_prompt_prefills_locally_uncounted():
    cluster = Cluster(CALIBRATION, {PREFILL: 1, DECODE: 1}, min_remote_prefill_tokens=64)
    (request,) = run_cluster(cluster, [SimRequest(0, 0.0, 10, 1)])

    assert request.remote_prefill is False
    assert cluster.view(PREFILL).local_prefill_fallbacks == 0


def test_new_replica_serves_after_startup():
    cluster = Cluster(CALIBRATION, {PREFILL: 0, DECODE: 1})
    cluster.set_replicas(PREFILL, 1)
    cluster.run_until(5.0)

    assert cluster.view(PREFILL).ready_replicas == 0
    cluster.run_until(10.0)
    assert cluster.view(PREFILL).ready_replicas == 1


def test_removed_replica_drains_first():
    cluster = Cluster(CALIBRATION, {PREFILL: 1, DECODE: 1})
    run_cluster(cluster, [SimRequest(0, 0.0, 100, 1)], until=0.5)
    cluster.set_replicas(PREFILL, 0)
    replica = cluster.replicas[PREFILL][0]

    assert replica.state == DRAINING
    cluster.run_until(5.0)
    assert replica.state == STOPPED
    assert replica.stopped_at == pytest.approx(1.0)


def test_observation_counts_queue_and_in_flight():
    cluster = Cluster(CALIBRATION, {PREFILL: 1, DECODE: 1})
    run_cluster(cluster, [SimRequest(i, 0.0, 100, 1) for i in range(3)], until=0.5)

    (observation,) = cluster.view(PREFILL).observations
    assert observation.queue_depth == 2
    assert observation.in_flight == 1


def test_simulation_is_deterministic():
    trace = synthetic_trace(300, seed=7, max_prompt_tokens=400, max_output_tokens=50)
    requests = [
        TraceRequest(r.arrival_s, r.prompt_tokens // 10 + 1, r.output_tokens)
        for r in trace.requests
    ]
    objectives = Objectives(ttft_seconds=5, itl_seconds=0.3)

    def run():
        scaler = StaticScaler("static", {PREFILL: 2, DECODE: 2})
        result = simulate(requests, CALIBRATION, scaler, 15.0, objectives)
        return [(r.first_token, r.finish) for r in result.requests]

    assert run() == run()
