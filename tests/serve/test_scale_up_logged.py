"""LocalPool logs a scale-up at INFO, as it does a scale-down."""

from __future__ import annotations

from disagg_worker.serve import LocalPool, ManagedProcess, PoolOptions


def test_scale_up_logs_started_replicas(monkeypatch, caplog):
    # Only the log line is under test: no worker process is started.
    monkeypatch.setattr(ManagedProcess, "start", lambda self: None)
    pool = LocalPool("decode", PoolOptions(model="unused"), on_change=lambda: None)
    caplog.set_level("INFO", logger="disagg_worker.serve")

    pool.scale_to(2)

    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["scaling up pool=decode to=2 starting=['decode[0]', 'decode[1]']"]
