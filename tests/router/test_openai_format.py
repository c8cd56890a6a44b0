"""Responses and SSE streams have the shape the official openai client reads."""

from __future__ import annotations

import json

import openai
import pytest

from .conftest import REPLY_TEXT


@pytest.fixture
async def router(start_router, fake_workers):
    decode = await fake_workers("decode")
    return await start_router(decode=[decode])


@pytest.fixture
async def client(router):
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused") as client:
        yield client


async def test_completion_text_and_usage(client):
    result = await client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="Say hello", max_tokens=100, temperature=0
    )
    assert result.choices[0].text == REPLY_TEXT
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.completion_tokens == result.usage.total_tokens - result.usage.prompt_tokens


async def test_completion_max_tokens_gives_length(client, reply_ids):
    result = await client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="Say hello", max_tokens=2
    )
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 2


async def test_chat_stream_with_usage(client):
    stream = await client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=100,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == REPLY_TEXT
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_completion_stream_text(client):
    stream = await client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="Say hello", stream=True, max_tokens=100
    )
    text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert text == REPLY_TEXT


async def test_stream_ends_with_done(router):
    body = {"model": "SmolLM2-135M-Instruct", "prompt": "Say hello", "stream": True}
    async with router.post("/v1/completions", body=body) as response:
        raw = (await response.read()).decode()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in raw.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    for event in events[:-1]:
        assert json.loads(event.removeprefix("data: "))["object"] == "text_completion"


async def test_stop_sequence_cuts_text(client):
    result = await client.completions.create(
        model="SmolLM2-135M-Instruct", prompt="Say hello", max_tokens=100, stop=[", this"]
    )
    assert result.choices[0].text == "Hello world"
    assert result.choices[0].finish_reason == "stop"


async def test_stop_sequence_never_streamed(client):
    stream = await client.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt="Say hello",
        max_tokens=100,
        stop=["is f"],
        stream=True,
    )
    text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert text == "Hello world, this "


async def test_token_id_prompt_accepted(client, router, reply_ids):
    result = await client.completions.create(
        model="SmolLM2-135M-Instruct", prompt=[1, 2, 3], max_tokens=3
    )
    assert result.usage.prompt_tokens == 3
