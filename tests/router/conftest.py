"""Fixtures for router tests: the SmolLM2 tokenizer, fake workers and a running router."""

from __future__ import annotations

import contextlib

import aiohttp
import pytest
from disagg_worker.router.app import Router, RouterSettings, start_server
from disagg_worker.router.discovery import Endpoints, StaticDiscovery
from disagg_worker.router.dispatch import DispatchConfig

from .fakes import FakeWorker

REPLY_TEXT = "Hello world, this is fine."


@pytest.fixture(scope="session")
def tokenizer():
    from disagg_worker.model import load_tokenizer

    return load_tokenizer("smollm2")


@pytest.fixture(scope="session")
def reply_ids(tokenizer) -> list[int]:
    return list(tokenizer.encode(REPLY_TEXT, add_special_tokens=False))


@pytest.fixture
async def fake_workers(reply_ids):
    """Factory of started FakeWorkers, stopped after the test."""
    started: list[FakeWorker] = []

    async def make(role: str, host: str = "127.0.0.1") -> FakeWorker:
        worker = FakeWorker(role, reply_ids, host=host)
        await worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        await worker.stop()


class RunningRouter:
    def __init__(self, router: Router, url: str, session: aiohttp.ClientSession) -> None:
        self.router = router
        self.url = url
        self.session = session

    def post(self, path: str, body=None, data=None):
        if data is not None:
            return self.session.post(self.url + path, data=data)
        return self.session.post(self.url + path, json=body)

    def get(self, path: str):
        return self.session.get(self.url + path)

    def counter(self, name: str, **labels) -> float:
        value = self.router.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


@pytest.fixture
async def start_router(tokenizer):
    """Factory: start a router on 127.0.0.1 over the given fake workers."""
    stack = contextlib.AsyncExitStack()

    async def start(prefill=(), decode=(), min_remote_prefill_tokens=4, **dispatch):
        endpoints = Endpoints(
            prefill=tuple(worker.address for worker in prefill),
            decode=tuple(worker.address for worker in decode),
        )
        settings = RouterSettings(
            model_name="SmolLM2-135M-Instruct",
            max_context=8192,
            vocab_size=len(tokenizer),
            dispatch=DispatchConfig(
                min_remote_prefill_tokens=min_remote_prefill_tokens,
                eos_token_ids=frozenset({tokenizer.eos_token_id}),
                **dispatch,
            ),
        )
        router = Router(settings, tokenizer, StaticDiscovery(endpoints))
        runner, port = await start_server(router, "127.0.0.1", 0)
        stack.push_async_callback(runner.cleanup)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        return RunningRouter(router, f"http://127.0.0.1:{port}", session)

    yield start
    await stack.aclose()
