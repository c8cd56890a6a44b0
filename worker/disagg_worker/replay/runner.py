"""Send planned requests at their times to an OpenAI-compatible server and time them.

Each request is a streamed /v1/completions call with a token-id prompt,
`max_tokens` set to the planned output length and `ignore_eos` (an
extension vLLM and this project's router accept) so the output has that
length. Arrivals are open-loop: a request is sent at its time whether or
not earlier ones finished, as in the trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import aiohttp
import openai
from prometheus_client.parser import text_string_to_metric_families

from disagg_worker.replay.workload import PlannedRequest

logger = logging.getLogger(__name__)

# Queue-depth gauges looked for on the server's /metrics, in this order.
QUEUE_DEPTH_METRICS = ("disagg_router_queue_depth", "disagg_queue_depth")
# Seconds between two scrapes of /metrics during a replay.
SCRAPE_INTERVAL_S = 1.0


@dataclass
class RequestResult:
    index: int
    # Seconds after the replay start when the request was sent.
    sent_at_s: float
    prompt_tokens: int
    max_tokens: int
    output_tokens: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    # Seconds between consecutive streamed text chunks.
    itl_s: list[float] = field(default_factory=list)
    # None on success, else a short kind such as "http_429" or "timeout".
    error: str | None = None
    error_message: str | None = None


@dataclass
class QueueSample:
    at_s: float
    role: str
    depth: float


def base_url(url: str) -> str:
    """Return the server root for a URL given with or without /v1."""
    return url.rstrip("/").removesuffix("/v1")


async def fetch_model_name(url: str) -> str:
    async with openai.AsyncOpenAI(base_url=base_url(url) + "/v1", api_key="unused") as client:
        models = await client.models.list()
    if not models.data:
        raise RuntimeError(f"{url}/v1/models lists no model; pass --model")
    return models.data[0].id


def _error_kind(error: Exception) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"http_{error.status_code}"
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    if isinstance(error, openai.APIError):
        return "stream_error"
    return type(error).__name__


async def send_one(
    client: openai.AsyncOpenAI, model: str, planned: PlannedRequest, started: float
) -> RequestResult:
    result = RequestResult(
        index=planned.index,
        sent_at_s=time.perf_counter() - started,
        prompt_tokens=len(planned.prompt_ids),
        max_tokens=planned.max_tokens,
    )
    sent = time.perf_counter()
    last: float | None = None
    try:
        stream = await client.completions.create(
            model=model,
            prompt=planned.prompt_ids,
            max_tokens=planned.max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.usage is not None:
                result.output_tokens = chunk.usage.completion_tokens
            if not chunk.choices or not chunk.choices[0].text:
                continue
            if last is None:
                result.ttft_s = now - sent
            else:
                result.itl_s.append(now - last)
            last = now
        result.e2e_s = time.perf_counter() - sent
    except openai.APIError as error:
        result.error = _error_kind(error)
        result.error_message = str(error)[:300]
        logger.debug("request failed index=%d kind=%s: %s", planned.index, result.error, error)
    return result


async def scrape_queue_depth(url: str, started: float, samples: list[QueueSample]) -> None:
    """Append queue depth per role from /metrics every second, until cancelled.

    Stops quietly when the server has no /metrics or none of the known gauges.
    """
    metrics_url = base_url(url) + "/metrics"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(metrics_url) as response:
                    if response.status != 200:
                        logger.info(
                            "no queue depth: %s returned HTTP %d", metrics_url, response.status
                        )
                        return
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError) as error:
                logger.debug("metrics scrape failed url=%s: %s", metrics_url, error)
            else:
                found = _queue_depths(text)
                if found is None:
                    logger.info(
                        "no queue depth: %s has none of %s", metrics_url, QUEUE_DEPTH_METRICS
                    )
                    return
                at_s = time.perf_counter() - started
                samples.extend(QueueSample(at_s, role, depth) for role, depth in found.items())
            await asyncio.sleep(SCRAPE_INTERVAL_S)


def _queue_depths(text: str) -> dict[str, float] | None:
    try:
        families = {family.name: family for family in text_string_to_metric_families(text)}
    except ValueError:
        return None
    for name in QUEUE_DEPTH_METRICS:
        family = families.get(name)
        if family is None:
            continue
        depths: dict[str, float] = {}
        for sample in family.samples:
            role = sample.labels.get("role", "all")
            depths[role] = depths.get(role, 0.0) + sample.value
        return depths
    return None


async def replay(
    url: str,
    model: str,
    planned: list[PlannedRequest],
    request_timeout_s: float = 600.0,
    progress: bool = True,
) -> tuple[list[RequestResult], list[QueueSample], float]:
    """Send every planned request at its time; return results, queue samples and wall seconds."""
    from tqdm.auto import tqdm

    samples: list[QueueSample] = []
    # The openai client's default pool allows 1,000 connections, enough for
    # the open-loop arrivals of any trace replayed here.
    async with openai.AsyncOpenAI(
        base_url=base_url(url) + "/v1",
        api_key="unused",
        timeout=request_timeout_s,
        max_retries=0,
    ) as client:
        started = time.perf_counter()
        scraper = asyncio.create_task(scrape_queue_depth(url, started, samples))
        bar = tqdm(total=len(planned), unit="req", disable=not progress, desc="replay")

        async def timed(request: PlannedRequest) -> RequestResult:
            delay = request.send_at_s - (time.perf_counter() - started)
            if delay > 0:
                await asyncio.sleep(delay)
            result = await send_one(client, model, request, started)
            bar.update(1)
            return result

        try:
            results = await asyncio.gather(*(timed(request) for request in planned))
        finally:
            bar.close()
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        wall_s = time.perf_counter() - started
    return list(results), samples, wall_s
