"""Fixtures of the operator runtime tests: `cluster` (kmock) and `operator` (kopf in a thread)."""

from __future__ import annotations

import kmock
import pytest
from disagg_operator import constants as c
from disagg_operator.handlers import HandlerOptions
from runtime_support import CR_RESOURCE, NAMESPACE, ApiServerEmulator, OperatorThread


@pytest.fixture
async def cluster(tmp_path, monkeypatch) -> ApiServerEmulator:
    """kmock with the built-in resources, the custom resource and a kubeconfig for it."""
    async with ApiServerEmulator() as emulator, kmock.Server(emulator):
        emulator.resources.load_bundled()
        emulator.resources[CR_RESOURCE] = kmock.ResourceInfo(
            kind=c.KIND,
            singular=c.SINGULAR,
            namespaced=True,
            shortnames={c.SHORT_NAME},
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            subresources={"status"},
        )
        config = tmp_path / "kubeconfig"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters:\n- name: kmock\n  cluster:\n    server: {emulator.url!s}\n"
            "contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: kmock\n"
            "users:\n- name: kmock\n  user: {}\n"
        )
        monkeypatch.setenv("KUBECONFIG", str(config))
        yield emulator


@pytest.fixture
def handler_options() -> HandlerOptions:
    """Handler options: no resync timer, so the watches do the work under test.

    The resync timer and the autoscaler daemon are off by default because
    kmock replays every object when kopf stops its watches: kopf then starts
    them once more after its daemon killer has exited, and each delays the
    shutdown for kopf's 5 s grace time.
    """
    return HandlerOptions(resync_seconds=None, daemon_cancellation_seconds=1.0, autoscaler=False)


@pytest.fixture
async def operator(cluster, handler_options) -> OperatorThread:
    runner = OperatorThread(handler_options, namespaces=[NAMESPACE])
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
