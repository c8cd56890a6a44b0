"""Prometheus metrics of the router, served on its /metrics.

Each `RouterMetrics` has its own registry, so several routers can run in
one process (tests do). The latency histograms use the same names as the
workers', so one dashboard query covers both. The router's figures are the
latencies a client observes, including the network and the router itself.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Reasons a request was prefilled on its decode replica (label `reason` of
# disagg_local_prefill_total).
REASON_SHORT_PROMPT = "short_prompt"
REASON_NO_PREFILL_REPLICA = "no_prefill_replica"
REASON_PREFILL_FAILED = "prefill_failed"
REASON_KV_TRANSFER_FAILED = "kv_transfer_failed"
LOCAL_PREFILL_REASONS = (
    REASON_SHORT_PROMPT,
    REASON_NO_PREFILL_REPLICA,
    REASON_PREFILL_FAILED,
    REASON_KV_TRANSFER_FAILED,
)

# Seconds; first-token times reach tens of seconds for long prompts on CPU.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2, 5)
DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)


class RouterMetrics:
    """The router's metric objects and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.time_to_first_token = Histogram(
            "disagg_time_to_first_token_seconds",
            "Seconds from request arrival at the router to its first generated token.",
            ["prefill"],
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "disagg_inter_token_latency_seconds",
            "Seconds between consecutive generated tokens of one request.",
            buckets=ITL_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "disagg_request_duration_seconds",
            "Seconds from request arrival to its last token or error.",
            ["endpoint"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "disagg_router_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.local_prefill = Counter(
            "disagg_local_prefill",
            "Requests prefilled on their decode replica, by reason.",
            ["reason"],
            registry=registry,
        )
        self.prefill_retries = Counter(
            "disagg_prefill_retries",
            "Prefill calls retried on another prefill replica after a failure.",
            registry=registry,
        )
        self.rejected = Counter(
            "disagg_router_rejected",
            "Requests answered 429 because every replica's queue was full.",
            registry=registry,
        )
        self.cancelled = Counter(
            "disagg_router_cancelled",
            "Generations cancelled because the client disconnected.",
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "disagg_prompt_tokens", "Prompt tokens of admitted requests.", registry=registry
        )
        self.generation_tokens = Counter(
            "disagg_generation_tokens",
            "Tokens generated and sent to clients.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "disagg_router_queue_depth",
            "Queue depth per role: the sum of what the ready replicas last reported.",
            ["role"],
            registry=registry,
        )
        self.inflight = Gauge(
            "disagg_router_inflight_requests",
            "Requests this router has running on each role's replicas.",
            ["role"],
            registry=registry,
        )
        self.ready_replicas = Gauge(
            "disagg_router_ready_replicas",
            "Replicas per role that pass health checks and are not draining.",
            ["role"],
            registry=registry,
        )
        self.replicas = Gauge(
            "disagg_router_replicas",
            "Replicas per role known from discovery, ready or not.",
            ["role"],
            registry=registry,
        )
        # Make every reason visible at 0, so rate() works from the start.
        for reason in LOCAL_PREFILL_REASONS:
            self.local_prefill.labels(reason=reason)

    def update_pools(self, pools) -> None:
        """Copy per-role pool state into the gauges (called before each scrape)."""
        for pool in pools:
            self.queue_depth.labels(role=pool.role).set(pool.queue_depth)
            self.inflight.labels(role=pool.role).set(pool.inflight)
            self.ready_replicas.labels(role=pool.role).set(len(pool.ready_replicas()))
            self.replicas.labels(role=pool.role).set(len(pool.replicas))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
