"""LocalPool.scale_to, the actuator for runtime scaling, with a tiny random model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from disagg_worker.serve import LocalDeployment, LocalPool, PoolOptions, WorkerReplica

from .harness import wait_until


@pytest.fixture
def pool(tiny_model_dir):
    events: list[list[str]] = []
    options = PoolOptions(model=str(tiny_model_dir), threads=1, drain_timeout_s=10)
    pool = LocalPool("decode", options, on_change=lambda: events.append(list(pool.addresses)))
    pool.events = events
    yield pool
    pool.scale_to(0)
    pool.wait_retired(timeout_s=60)


def test_scale_up_then_down_drains(pool):
    pool.scale_to(2)
    assert len(pool.replicas) == 2
    assert pool.events[-1] == pool.addresses
    assert wait_until(lambda: pool.ready_count() == 2, timeout_s=180, interval_s=0.5)

    leaving = pool.replicas[1].process
    pool.scale_to(1)
    # The endpoints file drops the replica before it is stopped.
    assert pool.events[-1] == pool.addresses
    assert len(pool.addresses) == 1
    assert pool.wait_retired(timeout_s=60)
    assert not leaving.running()
    # SIGTERM drained the idle replica: a clean exit, not SIGKILL.
    assert leaving.process.returncode == 0


def test_negative_count_rejected(pool):
    with pytest.raises(ValueError, match="at least 0"):
        pool.scale_to(-1)


def test_endpoints_file_lists_aggregated_as_decode(tiny_model_dir):
    deployment = LocalDeployment(
        PoolOptions(model=str(tiny_model_dir)), prefill_replicas=0, decode_replicas=0, port=0
    )
    deployment.pools["aggregated"].replicas = [WorkerReplica("aggregated", 0, 5001, 5002, None)]
    deployment.pools["prefill"].replicas = [WorkerReplica("prefill", 0, 5003, 5004, None)]
    deployment.write_endpoints()
    endpoints = json.loads(deployment.endpoints_file.read_text())
    assert endpoints == {"prefill": ["127.0.0.1:5003"], "decode": ["127.0.0.1:5001"]}


def test_serve_without_decode_replicas_is_error():
    result = subprocess.run(
        [sys.executable, "-m", "disagg_worker", "serve", "--decode-replicas", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "at least one replica must generate tokens" in result.stderr
