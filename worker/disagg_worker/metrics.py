"""Prometheus metrics of a worker replica (prefill, decode or aggregated).

Each `WorkerMetrics` owns its own `CollectorRegistry`, so several replicas
can run in one process (as the tests do) without their series colliding.
`metrics_http` serves that registry on the replica's metrics port; the
gRPC services in `disagg_worker.server` update it.

The metric names below are a contract with the operator's autoscaler and
with dashboards: change them only together with their readers.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

QUEUE_DEPTH = "disagg_queue_depth"
INFLIGHT_REQUESTS = "disagg_inflight_requests"
TIME_TO_FIRST_TOKEN_SECONDS = "disagg_time_to_first_token_seconds"
INTER_TOKEN_LATENCY_SECONDS = "disagg_inter_token_latency_seconds"
REQUEST_DURATION_SECONDS = "disagg_request_duration_seconds"
KV_TRANSFER_BYTES = "disagg_kv_transfer_bytes"
KV_TRANSFER_SECONDS = "disagg_kv_transfer_seconds"
KV_TRANSFER_FAILURES = "disagg_kv_transfer_failures"
LOCAL_PREFILL = "disagg_local_prefill"
PROMPT_TOKENS = "disagg_prompt_tokens"
GENERATION_TOKENS = "disagg_generation_tokens"
PENDING_KV_TRANSFERS = "disagg_pending_kv_transfers"
KV_STORE_BYTES = "disagg_kv_store_bytes"
REJECTED_REQUESTS = "disagg_rejected_requests"
DRAINING = "disagg_draining"
MODEL_INFO = "disagg_model_info"

# prometheus_client appends "_total" to counter names on exposition, so the
# constants above name e.g. `disagg_kv_transfer_bytes_total` on /metrics.

# Direction label values of the KV transfer metrics.
SENT = "sent"
RECEIVED = "received"

# Reason label values of disagg_kv_transfer_failures_total.
FAILURE_FINGERPRINT_MISMATCH = "fingerprint_mismatch"
FAILURE_INVALID = "invalid"
FAILURE_STORE_FULL = "store_full"
FAILURE_DUPLICATE = "duplicate"
FAILURE_ABORTED = "aborted"
FAILURE_INCOMPLETE = "incomplete"
FAILURE_UNREACHABLE = "unreachable"
FAILURE_REJECTED = "rejected"
FAILURE_INTERNAL = "internal"
FAILURE_TIMEOUT = "timeout"
FAILURE_DRAINING = "draining"

# Reason label values of disagg_rejected_requests_total.
REJECT_QUEUE_FULL = "queue_full"
REJECT_DRAINING = "draining"
REJECT_INVALID = "invalid"
REJECT_KV_NOT_FOUND = "kv_not_found"

# Latency buckets in seconds: CPU prefill of long prompts takes seconds,
# GPU decode steps take milliseconds.
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_TRANSFER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """The metric objects of one replica, registered on a private registry."""

    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self._queue_depth = Gauge(
            QUEUE_DEPTH, "Requests admitted and waiting to start.", ["role"], registry=r
        )
        self._inflight = Gauge(
            INFLIGHT_REQUESTS, "Requests running (prefilling or decoding).", ["role"], registry=r
        )
        self._pending_transfers = Gauge(
            PENDING_KV_TRANSFERS,
            "KV transfers sent by this replica and not yet acknowledged by the decode replica.",
            ["role"],
            registry=r,
        )
        self._kv_store_bytes = Gauge(
            KV_STORE_BYTES,
            "Bytes of received KV cache held or reserved, waiting for Decode.Generate.",
            ["role"],
            registry=r,
        )
        self.draining = Gauge(
            DRAINING, "1 while the replica drains after SIGTERM, else 0.", ["role"], registry=r
        ).labels(role)
        self.model_info = Gauge(
            MODEL_INFO,
            "Always 1; the labels name the served model and its fingerprint.",
            ["role", "model", "fingerprint"],
            registry=r,
        )

        self.time_to_first_token = Histogram(
            TIME_TO_FIRST_TOKEN_SECONDS,
            "Seconds from receiving a request to producing its first token on this replica.",
            ["role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(role)
        self.inter_token_latency = Histogram(
            INTER_TOKEN_LATENCY_SECONDS,
            "Seconds between consecutive tokens of one request sent by this replica.",
            ["role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(role)
        self.request_duration = Histogram(
            REQUEST_DURATION_SECONDS,
            "Seconds from receiving a request to its last reply message on this replica.",
            ["role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        ).labels(role)

        self.kv_transfer_bytes = Counter(
            KV_TRANSFER_BYTES,
            "Bytes of KV cache moved by completed KV transfers.",
            ["direction"],
            registry=r,
        )
        self.kv_transfer_seconds = Histogram(
            KV_TRANSFER_SECONDS,
            "Seconds per completed KV transfer, from the first message to the acknowledgement.",
            ["direction"],
            buckets=_TRANSFER_BUCKETS,
            registry=r,
        )
        self.kv_transfer_failures = Counter(
            KV_TRANSFER_FAILURES, "KV transfers that failed, by reason.", ["reason"], registry=r
        )
        self.local_prefill = Counter(
            LOCAL_PREFILL,
            "Requests prefilled on a decode replica instead of the prefill pool, by reason.",
            ["reason"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            PROMPT_TOKENS, "Prompt tokens prefilled on this replica.", ["role"], registry=r
        ).labels(role)
        self.generation_tokens = Counter(
            GENERATION_TOKENS, "Tokens generated and sent by this replica.", ["role"], registry=r
        ).labels(role)
        self.rejected_requests = Counter(
            REJECTED_REQUESTS,
            "Requests rejected before admission, by reason.",
            ["role", "reason"],
            registry=r,
        )

    def track_load(
        self,
        queue_depth: Callable[[], float],
        inflight: Callable[[], float],
        pending_kv_transfers: Callable[[], float] | None = None,
        kv_store_bytes: Callable[[], float] | None = None,
    ) -> None:
        """Read the load gauges from the engines at every scrape, so they never go stale."""
        self._queue_depth.labels(self.role).set_function(queue_depth)
        self._inflight.labels(self.role).set_function(inflight)
        if pending_kv_transfers is not None:
            self._pending_transfers.labels(self.role).set_function(pending_kv_transfers)
        if kv_store_bytes is not None:
            self._kv_store_bytes.labels(self.role).set_function(kv_store_bytes)

    def set_model(self, model_name: str, fingerprint: str) -> None:
        self.model_info.labels(self.role, model_name, fingerprint).set(1)

    def reject(self, reason: str) -> None:
        self.rejected_requests.labels(self.role, reason).inc()
