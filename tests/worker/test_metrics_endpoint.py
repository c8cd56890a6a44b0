"""The metrics endpoint of real replicas: exact values after known traffic, and the probes."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import grpc
import pytest
from disagg_worker.metrics import WorkerMetrics
from disagg_worker.metrics_http import MetricsHttpServer
from disagg_worker.model import load_model
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.app import WorkerOptions, create_server
from disagg_worker.server.common import ReplicaState
from grpc_support import gated, generate, running_server, stubs, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROMPT = [1, 2, 3, 4, 5]


@contextlib.asynccontextmanager
async def metrics_endpoint(server):
    http = MetricsHttpServer(server.metrics.registry, ready=lambda: server.state.ready)
    port = await http.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await http.stop()


async def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    """Return {(sample name, sorted labels): value} from /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def status_of(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status


async def test_load_gauges_read_engine_live(tiny_model):
    loaded, gate = gated(tiny_model)
    request = pb.GenerateRequest(max_tokens=2, prompt=pb.TokenIds(ids=PROMPT))
    async with (
        running_server("decode", loaded, max_batch=1) as (server, address),
        metrics_endpoint(server) as base_url,
        stubs(address) as client,
    ):
        engine = server.decode_engine
        first = pb.GenerateRequest(request_id="gauge-1")
        first.MergeFrom(request)
        second = pb.GenerateRequest(request_id="gauge-2")
        second.MergeFrom(request)
        running = asyncio.ensure_future(generate(client.decode, first))
        await wait_until(lambda: engine.inflight == 1, description="the first request to run")
        waiting = asyncio.ensure_future(generate(client.decode, second))
        await wait_until(lambda: engine.queue_depth == 1, description="the second request to queue")
        busy = await scrape(base_url)
        gate.gate.set()
        await asyncio.gather(running, waiting)
        idle = await scrape(base_url)

    role = (("role", "decode"),)
    assert busy[("disagg_queue_depth", role)] == 1
    assert busy[("disagg_inflight_requests", role)] == 1
    assert idle[("disagg_queue_depth", role)] == 0
    assert idle[("disagg_inflight_requests", role)] == 0


async def test_transfer_and_token_counters_exact(tiny_model):
    async with (
        running_server("decode", tiny_model) as (decode, decode_address),
        running_server("prefill", tiny_model) as (prefill, prefill_address),
        metrics_endpoint(decode) as decode_url,
        metrics_endpoint(prefill) as prefill_url,
        stubs(prefill_address) as prefill_client,
        stubs(decode_address) as decode_client,
    ):
        reply = await prefill_client.prefill.Prefill(
            pb.PrefillRequest(
                request_id="count-1", prompt_token_ids=PROMPT, decode_address=decode_address
            ),
            timeout=60,
        )
        rest, _ = await generate(
            decode_client.decode,
            pb.GenerateRequest(request_id="count-1", max_tokens=4, ignore_eos=True, remote_kv=True),
        )
        prefill_samples = await scrape(prefill_url)
        decode_samples = await scrape(decode_url)

    sent = (("direction", "sent"),)
    received = (("direction", "received"),)
    assert reply.kv_bytes == len(PROMPT) * tiny_model.kv_bytes_per_token
    assert prefill_samples[("disagg_kv_transfer_bytes_total", sent)] == reply.kv_bytes
    assert prefill_samples[("disagg_kv_transfer_seconds_count", sent)] == 1
    assert decode_samples[("disagg_kv_transfer_bytes_total", received)] == reply.kv_bytes
    assert decode_samples[("disagg_kv_transfer_seconds_count", received)] == 1
    prefill_role = (("role", "prefill"),)
    decode_role = (("role", "decode"),)
    assert prefill_samples[("disagg_prompt_tokens_total", prefill_role)] == len(PROMPT)
    assert prefill_samples[("disagg_generation_tokens_total", prefill_role)] == 1
    assert prefill_samples[("disagg_time_to_first_token_seconds_count", prefill_role)] == 1
    assert len(rest) == 3
    assert decode_samples[("disagg_generation_tokens_total", decode_role)] == 3
    assert decode_samples[("disagg_inter_token_latency_seconds_count", decode_role)] == 2
    assert decode_samples[("disagg_request_duration_seconds_count", decode_role)] == 1
    assert decode_samples[("disagg_kv_store_bytes", decode_role)] == 0


async def test_local_prefill_counts_prompt_tokens(tiny_model):
    async with (
        running_server("decode", tiny_model) as (server, address),
        metrics_endpoint(server) as base_url,
        stubs(address) as client,
    ):
        await generate(
            client.decode,
            pb.GenerateRequest(
                request_id="local-1",
                max_tokens=3,
                ignore_eos=True,
                prompt=pb.TokenIds(ids=PROMPT),
            ),
        )
        samples = await scrape(base_url)

    role = (("role", "decode"),)
    assert samples[("disagg_generation_tokens_total", role)] == 3
    assert samples[("disagg_time_to_first_token_seconds_count", role)] == 1
    assert samples[("disagg_local_prefill_total", (("reason", "requested"),))] == 1


async def test_fingerprint_failure_counted_on_both_ends(tiny_model, tiny_model_dir):
    other = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    async with (
        running_server("decode", other) as (decode, decode_address),
        running_server("prefill", tiny_model) as (prefill, prefill_address),
        metrics_endpoint(decode) as decode_url,
        metrics_endpoint(prefill) as prefill_url,
        stubs(prefill_address) as client,
    ):
        with pytest.raises(grpc.aio.AioRpcError, match="fingerprint"):
            await client.prefill.Prefill(
                pb.PrefillRequest(
                    request_id="foreign-1", prompt_token_ids=PROMPT, decode_address=decode_address
                ),
                timeout=60,
            )
        decode_samples = await scrape(decode_url)
        prefill_samples = await scrape(prefill_url)

    reason = (("reason", "fingerprint_mismatch"),)
    assert decode_samples[("disagg_kv_transfer_failures_total", reason)] == 1
    assert prefill_samples[("disagg_kv_transfer_failures_total", reason)] == 1


async def test_model_info_names_fingerprint(tiny_model):
    async with (
        running_server("prefill", tiny_model) as (server, _),
        metrics_endpoint(server) as base_url,
    ):
        samples = await scrape(base_url)
    labels = (
        ("fingerprint", tiny_model.fingerprint),
        ("model", tiny_model.name),
        ("role", "prefill"),
    )
    assert samples[("disagg_model_info", labels)] == 1


async def test_ready_only_while_loaded_and_not_draining(tiny_model):
    state = ReplicaState("decode")
    metrics = WorkerMetrics("decode")
    server, _ = create_server(
        "decode", "127.0.0.1:0", tiny_model, WorkerOptions(), metrics=metrics, state=state
    )
    http = MetricsHttpServer(metrics.registry, ready=lambda: state.ready)
    port = await http.start("127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{port}"
    try:
        before_start = await status_of(f"{base_url}/health/ready")
        live_before_start = await status_of(f"{base_url}/health/live")
        await server.start()
        serving = await status_of(f"{base_url}/health/ready")
        await server.drain(timeout=5)
        draining = await status_of(f"{base_url}/health/ready")
        live_draining = await status_of(f"{base_url}/health/live")
        draining_gauge = (await scrape(base_url))[("disagg_draining", (("role", "decode"),))]
    finally:
        await server.stop(grace=0)
        await http.stop()

    assert before_start == 503
    assert live_before_start == 200
    assert serving == 200
    assert draining == 503
    assert live_draining == 200
    assert draining_gauge == 1
