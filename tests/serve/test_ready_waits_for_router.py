"""`disagg serve` is ready only when the router counts every replica as ready."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from disagg_worker.serve import LocalDeployment, PoolOptions, WorkerReplica


class RouterHealth(BaseHTTPRequestHandler):
    """/health of a router that reports the counts in `server.counts`."""

    def do_GET(self) -> None:
        counts = self.server.counts
        body = json.dumps(counts).encode()
        self.send_response(200 if counts["decode_ready"] else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def router_health():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RouterHealth)
    server.counts = {"prefill_ready": 0, "decode_ready": 0}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def deployment(router_health):
    port = router_health.server_address[1]
    deployment = LocalDeployment(PoolOptions(model="unused"), 0, 0, port=port)
    deployment.pools["prefill"].replicas = [WorkerReplica("prefill", 0, 5001, 5002, None)]
    deployment.pools["decode"].replicas = [WorkerReplica("decode", 0, 5003, 5004, None)]
    # Only its presence matters to router_sees_all.
    deployment.router = object()
    yield deployment
    deployment.endpoints_file.unlink(missing_ok=True)
    deployment.endpoints_file.parent.rmdir()


def test_not_ready_while_decode_missing(deployment, router_health):
    router_health.counts = {"prefill_ready": 1, "decode_ready": 0}

    assert not deployment.router_sees_all()


def test_not_ready_while_prefill_missing(deployment, router_health):
    router_health.counts = {"prefill_ready": 0, "decode_ready": 1}

    assert not deployment.router_sees_all()


def test_ready_when_every_replica_counted(deployment, router_health):
    router_health.counts = {"prefill_ready": 1, "decode_ready": 1}

    assert deployment.router_sees_all()


def test_not_ready_while_router_unreachable(deployment, router_health):
    router_health.shutdown()
    router_health.server_close()

    assert not deployment.router_sees_all()
