"""The router's HTTP server: the OpenAI-compatible API in front of the pools.

Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions
(streaming as server-sent events or not), GET /health, GET /metrics.

A request is parsed and validated (openai_schema), tokenized (chat
messages through the model's chat template), checked against the context
length, and handed to the `Dispatcher`, which picks replicas and yields
tokens. This module turns those tokens into text (detokenize) and into the
response body. The server runs with handler cancellation on, so a client
that disconnects cancels its handler, and closing the dispatcher's
generator cancels the gRPC call that occupies the decode slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from disagg_worker.client import ReplicaPool
from disagg_worker.proto import worker_pb2
from disagg_worker.router import openai_schema as schema
from disagg_worker.router.detokenize import IncrementalDetokenizer, StopMatcher
from disagg_worker.router.discovery import apply_once, run_discovery
from disagg_worker.router.dispatch import (
    DispatchConfig,
    Dispatcher,
    GenerationFailed,
    Job,
    NoReplica,
    Overloaded,
    TokenEvent,
)
from disagg_worker.router.metrics import RouterMetrics

logger = logging.getLogger(__name__)

COMPLETIONS = "completions"
CHAT = "chat"
# Request storage key of the router-assigned request id, for log lines.
REQUEST_ID_KEY = web.RequestKey("request_id", str)


@dataclass
class RouterSettings:
    """Served model facts and request-handling settings of the router."""

    # Name in /v1/models; requests must name it or one of `model_aliases`.
    model_name: str
    max_context: int
    vocab_size: int
    model_aliases: frozenset[str] = frozenset()
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    # Seconds sent in Retry-After when every replica is full.
    retry_after_s: int = 1
    # Seconds between two discovery resolutions.
    discovery_interval_s: float = 5.0


class Router:
    """State shared by the handlers: tokenizer, pools, dispatcher, metrics."""

    def __init__(self, settings: RouterSettings, tokenizer, discovery) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.discovery = discovery
        self.metrics = RouterMetrics()
        self.pools = {"prefill": ReplicaPool("prefill"), "decode": ReplicaPool("decode")}
        self.dispatcher = Dispatcher(
            settings.dispatch, self.pools["prefill"], self.pools["decode"], self.metrics
        )
        self.created = int(time.time())
        self._discovery_task: asyncio.Task | None = None

    async def start(self) -> None:
        await apply_once(self.discovery, self.pools)
        for pool in self.pools.values():
            pool.start()
        self._discovery_task = asyncio.create_task(
            run_discovery(self.discovery, self.pools, self.settings.discovery_interval_s)
        )
        logger.info(
            "router started model=%s prefill=%s decode=%s",
            self.settings.model_name,
            ",".join(self.pools["prefill"].addresses) or "-",
            ",".join(self.pools["decode"].addresses) or "-",
        )

    async def stop(self) -> None:
        if self._discovery_task is not None:
            self._discovery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._discovery_task
        for pool in self.pools.values():
            await pool.close()
        logger.info("router stopped")

    # -- request preparation -------------------------------------------------

    def _check_model(self, requested: str) -> None:
        names = {self.settings.model_name, *self.settings.model_aliases}
        if requested not in names:
            raise schema.RequestError(
                f"model {requested!r} not found; this server serves {self.settings.model_name!r}",
                param="model",
                status=404,
                code="model_not_found",
            )

    def _tokenize_completion(self, request: schema.CompletionRequest) -> list[int]:
        prompt = schema.single_prompt(request)
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt, add_special_tokens=False))
        vocab_size = self.settings.vocab_size
        for index, token_id in enumerate(prompt):
            if not 0 <= token_id < vocab_size:
                raise schema.RequestError(
                    f"prompt token id {token_id} at index {index} is outside the "
                    f"vocabulary [0, {vocab_size})",
                    param="prompt",
                )
        return list(prompt)

    def _tokenize_chat(self, request: schema.ChatCompletionRequest) -> list[int]:
        messages = [
            {"role": message.role, "content": message.text()} for message in request.messages
        ]
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True
            )
        except Exception as error:
            # Templates raise jinja2 errors of their own (e.g. on role order).
            raise schema.RequestError(
                f"cannot apply the model's chat template to messages: {error}",
                param="messages",
            ) from error
        if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def prepare(self, kind: str, request) -> tuple[Job, str]:
        """Tokenize and check a validated request; return the job and its prompt field."""
        self._check_model(request.model)
        if kind == CHAT:
            prompt_ids, prompt_field = self._tokenize_chat(request), "messages"
        else:
            prompt_ids, prompt_field = self._tokenize_completion(request), "prompt"
        if not prompt_ids:
            raise schema.RequestError(f"{prompt_field} is empty after tokenization", prompt_field)

        max_context = self.settings.max_context
        if len(prompt_ids) >= max_context:
            raise schema.RequestError(
                f"{prompt_field} has {len(prompt_ids)} tokens; the model's context is "
                f"{max_context} tokens including the output, so shorten it",
                param=prompt_field,
                code="context_length_exceeded",
            )
        max_tokens = request.max_tokens
        max_tokens_field = "max_tokens"
        if kind == CHAT and request.max_completion_tokens is not None:
            max_tokens, max_tokens_field = request.max_completion_tokens, "max_completion_tokens"
        if max_tokens is None:
            # OpenAI's defaults: 16 for completions, the rest of the context for chat.
            max_tokens = (
                schema.COMPLETIONS_DEFAULT_MAX_TOKENS
                if kind == COMPLETIONS
                else max_context - len(prompt_ids)
            )
            max_tokens = min(max_tokens, max_context - len(prompt_ids))
        elif len(prompt_ids) + max_tokens > max_context:
            raise schema.RequestError(
                f"{len(prompt_ids)} prompt tokens + {max_tokens_field}={max_tokens} exceed the "
                f"model's context of {max_context} tokens; lower {max_tokens_field} to at most "
                f"{max_context - len(prompt_ids)}",
                param=max_tokens_field,
                code="context_length_exceeded",
            )
        sampling = worker_pb2.SamplingParams(
            temperature=request.temperature, top_p=request.top_p, seed=request.seed
        )
        job = Job(
            request_id=schema.new_request_id("chatcmpl" if kind == CHAT else "cmpl"),
            prompt_ids=prompt_ids,
            max_tokens=max_tokens,
            sampling=sampling,
            ignore_eos=request.ignore_eos,
        )
        return job, prompt_field


def _json_response(body, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _error_response(error: schema.RequestError) -> web.Response:
    return _json_response(error.body(), status=error.status, headers=error.headers)


def _sse(payload) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class Handlers:
    """aiohttp handlers bound to one `Router`."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def models(self, request: web.Request) -> web.Response:
        settings = self.router.settings
        return _json_response(schema.model_list(settings.model_name, self.router.created))

    async def health(self, request: web.Request) -> web.Response:
        pools = self.router.pools
        body = {
            "prefill_ready": len(pools["prefill"].ready_replicas()),
            "decode_ready": len(pools["decode"].ready_replicas()),
        }
        # Without a ready decode replica no request can complete; without a
        # prefill replica requests still run with local prefill.
        body["status"] = "ok" if body["decode_ready"] else "unavailable"
        return _json_response(body, status=200 if body["decode_ready"] else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        self.router.metrics.update_pools(self.router.pools.values())
        body, content_type = self.router.metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, COMPLETIONS)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, CHAT)

    async def _generate(self, http_request: web.Request, kind: str) -> web.StreamResponse:
        """Run one request: validate, dispatch, respond whole or as an event stream."""
        arrived = time.perf_counter()
        metrics = self.router.metrics
        try:
            response = await self._generate_or_raise(http_request, kind, arrived)
        except (asyncio.CancelledError, ConnectionResetError):
            # The client went away; leaving the dispatcher's generator has
            # cancelled the gRPC call, which frees the decode slot.
            metrics.cancelled.inc()
            logger.info(
                "client disconnected request_id=%s endpoint=%s; generation cancelled",
                http_request.get(REQUEST_ID_KEY, "-"),
                kind,
            )
            raise
        except schema.RequestError as error:
            # The one log line of a request that ends in an error status.
            if error.status >= 500:
                level, outcome = logging.ERROR, "failed"
            else:
                level = logging.WARNING if error.status == 429 else logging.INFO
                outcome = "rejected"
            logger.log(
                level,
                "request %s request_id=%s endpoint=%s status=%d param=%s: %s",
                outcome,
                http_request.get(REQUEST_ID_KEY, "-"),
                kind,
                error.status,
                error.param,
                error.message,
            )
            response = _error_response(error)
        metrics.requests.labels(endpoint=kind, status=str(response.status)).inc()
        metrics.request_duration.labels(endpoint=kind).observe(time.perf_counter() - arrived)
        return response

    async def _read_body(self, http_request: web.Request):
        try:
            return await http_request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise schema.RequestError(
                f"the request body is not valid JSON: {error}", param=None
            ) from error

    async def _generate_or_raise(
        self, http_request: web.Request, kind: str, arrived: float
    ) -> web.StreamResponse:
        router = self.router
        body = await self._read_body(http_request)
        model_class = schema.ChatCompletionRequest if kind == CHAT else schema.CompletionRequest
        request = schema.parse_request(model_class, body)
        # Tokenizing a long prompt takes milliseconds; keep it off the event loop.
        job, _ = await asyncio.to_thread(router.prepare, kind, request)
        http_request[REQUEST_ID_KEY] = job.request_id
        router.metrics.prompt_tokens.inc(len(job.prompt_ids))

        events = router.dispatcher.generate(job)
        async with contextlib.aclosing(events):
            # The first event comes before any header is sent, so a full pool
            # or a missing replica still gets its own HTTP status.
            try:
                first = await anext(events)
            except Overloaded as error:
                router.metrics.rejected.inc()
                raise schema.RequestError(
                    f"every replica is at capacity ({error}); retry after "
                    f"{router.settings.retry_after_s} s",
                    status=429,
                    error_type="rate_limit_error",
                    code="server_overloaded",
                    headers={"Retry-After": str(router.settings.retry_after_s)},
                ) from error
            except NoReplica as error:
                raise schema.RequestError(
                    f"no replica can serve the request: {error}",
                    status=503,
                    error_type="server_error",
                    code="no_replica",
                    headers={"Retry-After": str(router.settings.retry_after_s)},
                ) from error
            except GenerationFailed as error:
                raise schema.RequestError(
                    f"generation failed: {error}", status=502, error_type="server_error"
                ) from error
            except StopAsyncIteration as error:
                raise schema.RequestError(
                    "generation ended before its first token", status=502, error_type="server_error"
                ) from error
            ttft = time.perf_counter() - arrived
            router.metrics.time_to_first_token.labels(prefill=first.prefill).observe(ttft)
            logger.info(
                "first token request_id=%s prefill=%s prompt_tokens=%d ttft_s=%.3f",
                job.request_id,
                first.prefill,
                len(job.prompt_ids),
                ttft,
            )
            stream = _TextStream(router, request, job, first, events)
            if request.stream:
                return await self._stream(http_request, kind, request, job, stream)
            return await self._whole(kind, job, stream)

    async def _whole(self, kind: str, job: Job, stream: _TextStream) -> web.Response:
        try:
            text = "".join([delta async for delta in stream.deltas()])
        except GenerationFailed as error:
            raise schema.RequestError(
                f"generation failed: {error}", status=502, error_type="server_error"
            ) from error
        usage = schema.usage(len(job.prompt_ids), stream.completion_tokens)
        model_name = self.router.settings.model_name
        build = schema.chat_completion if kind == CHAT else schema.completion
        return _json_response(build(job.request_id, model_name, text, stream.finish_reason, usage))

    async def _stream(
        self, http_request: web.Request, kind: str, request, job: Job, stream: _TextStream
    ) -> web.StreamResponse:
        model_name = self.router.settings.model_name
        created = int(time.time())
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(http_request)

        def chunk(text: str | None, finish_reason: str | None, role: str | None = None):
            if kind == CHAT:
                return schema.chat_chunk(
                    job.request_id, model_name, created, text, finish_reason, role
                )
            return schema.completion_chunk(
                job.request_id, model_name, created, text or "", finish_reason
            )

        try:
            if kind == CHAT:
                # OpenAI's chat streams open with the role and empty content.
                await response.write(_sse(chunk("", None, role="assistant")))
            async for delta in stream.deltas():
                await response.write(_sse(chunk(delta, None)))
            await response.write(
                _sse(chunk("" if kind == COMPLETIONS else None, stream.finish_reason))
            )
            if request.stream_options is not None and request.stream_options.include_usage:
                usage = schema.usage(len(job.prompt_ids), stream.completion_tokens)
                if kind == CHAT:
                    payload = schema.chat_chunk(
                        job.request_id, model_name, created, None, None, usage_=usage
                    )
                else:
                    payload = schema.completion_chunk(
                        job.request_id, model_name, created, "", None, usage_=usage
                    )
                await response.write(_sse(payload))
            await response.write(b"data: [DONE]\n\n")
        except GenerationFailed as error:
            # Headers are sent: report the failure as an error event, which
            # the openai client raises as an APIError.
            body = schema.error_body(f"generation failed: {error}", "server_error")
            await response.write(_sse(body))
        await response.write_eof()
        return response


class _TextStream:
    """Turns the dispatcher's token events into text deltas and finish state."""

    def __init__(self, router: Router, request, job: Job, first: TokenEvent, events) -> None:
        self.router = router
        self.job = job
        self.first = first
        self.events: AsyncIterator[TokenEvent] = events
        self.detokenizer = IncrementalDetokenizer(router.tokenizer)
        self.stop = StopMatcher(schema.stop_sequences(request))
        self.completion_tokens = 0
        self.finish_reason = "length"

    async def deltas(self) -> AsyncIterator[str]:
        """Yield text deltas; stops early (closing the call) on a stop sequence."""
        metrics = self.router.metrics
        last = time.perf_counter()
        event: TokenEvent | None = self.first
        while event is not None:
            if event.token_ids:
                now = time.perf_counter()
                if self.completion_tokens:
                    # A message with several tokens spreads its gap over them.
                    gap = (now - last) / len(event.token_ids)
                    for _ in event.token_ids:
                        metrics.inter_token_latency.observe(gap)
                last = now
                self.completion_tokens += len(event.token_ids)
                metrics.generation_tokens.inc(len(event.token_ids))
                text = self.stop.feed(self.detokenizer.add(event.token_ids))
                if text:
                    yield text
                if self.stop.stopped:
                    self.finish_reason = "stop"
                    return
            if event.finish_reason:
                self.finish_reason = event.finish_reason
                tail = self.stop.feed(self.detokenizer.flush())
                tail += self.stop.flush()
                if self.stop.stopped:
                    self.finish_reason = "stop"
                if tail:
                    yield tail
                return
            event = await anext(self.events, None)
        raise GenerationFailed("the token stream ended without a finish reason")


# OpenAI error types for the HTTP errors aiohttp raises before a handler runs.
_HTTP_ERROR_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


@web.middleware
async def openai_http_errors(request: web.Request, handler) -> web.StreamResponse:
    """Convert aiohttp's own HTTP errors (unknown route, wrong method) to OpenAI-style bodies."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = f"{error.reason}: {request.method} {request.path}"
        if isinstance(error, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(error.allowed_methods))
            message += f"; use {allowed}"
        error_type = _HTTP_ERROR_TYPES.get(error.status, "invalid_request_error")
        headers = {key: value for key, value in error.headers.items() if key == "Allow"}
        return _json_response(schema.error_body(message, error_type), error.status, headers)


def create_app(router: Router) -> web.Application:
    app = web.Application(middlewares=[openai_http_errors])
    handlers = Handlers(router)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/metrics", handlers.metrics)

    async def start(_app: web.Application) -> None:
        await router.start()

    async def stop(_app: web.Application) -> None:
        await router.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app


async def start_server(router: Router, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving on host:port (0 picks a free port); return the runner and bound port."""
    runner = web.AppRunner(create_app(router), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    logger.info("router listening url=http://%s:%d", host, bound_port)
    return runner, bound_port
