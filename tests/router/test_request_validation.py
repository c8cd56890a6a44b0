"""Bad requests get an OpenAI-style error body naming the field."""

from __future__ import annotations

import pytest


@pytest.fixture
async def router(start_router, fake_workers):
    decode = await fake_workers("decode")
    return await start_router(decode=[decode])


async def error_of(response):
    body = await response.json()
    return response.status, body["error"]


async def test_malformed_json_is_400(router):
    async with router.post("/v1/completions", data=b"{not json") as response:
        status, error = await error_of(response)
    assert status == 400
    assert "not valid JSON" in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_body_not_object_is_400(router):
    async with router.post("/v1/completions", body=[1, 2]) as response:
        status, error = await error_of(response)
    assert status == 400
    assert "JSON object" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "hi"}, "model"),
        ({"model": "SmolLM2-135M-Instruct"}, "prompt"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": 5}, "prompt"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": "5"}, "max_tokens"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "temperature": "hot"}, "temperature"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "temperature": 3}, "temperature"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "top_p": 0}, "top_p"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "stream": "yes"}, "stream"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "n": 2}, "n"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "stop": ["a"] * 5}, "stop"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "echo": True}, "echo"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": "hi", "logprobs": 2}, "logprobs"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": [1, 99999999]}, "prompt"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "SmolLM2-135M-Instruct", "prompt": ""}, "prompt"),
    ],
)
async def test_completions_field_error_names_param(router, body, param):
    async with router.post("/v1/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 400
    assert error["param"] == param
    assert error["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
    ],
)
async def test_chat_message_error_names_param(router, messages, param):
    body = {"model": "SmolLM2-135M-Instruct", "messages": messages}
    async with router.post("/v1/chat/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 400
    assert error["param"] == param


async def test_unknown_model_is_404(router):
    body = {"model": "gpt-9", "prompt": "hi"}
    async with router.post("/v1/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 404
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"


async def test_prompt_plus_max_tokens_over_context_is_400(router):
    body = {"model": "SmolLM2-135M-Instruct", "prompt": [1] * 8000, "max_tokens": 500}
    async with router.post("/v1/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 400
    assert error["param"] == "max_tokens"
    assert error["code"] == "context_length_exceeded"
    assert "at most 192" in error["message"]


async def test_prompt_over_context_is_400(router):
    body = {"model": "SmolLM2-135M-Instruct", "prompt": [1] * 8192, "max_tokens": 1}
    async with router.post("/v1/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 400
    assert error["param"] == "prompt"


async def test_max_completion_tokens_over_context_names_it(router):
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 9000,
    }
    async with router.post("/v1/chat/completions", body=body) as response:
        status, error = await error_of(response)
    assert status == 400
    assert error["param"] == "max_completion_tokens"


async def test_models_lists_served_model(router):
    async with router.get("/v1/models") as response:
        body = await response.json()
    assert response.status == 200
    assert [model["id"] for model in body["data"]] == ["SmolLM2-135M-Instruct"]


async def test_unknown_route_is_json_404(router):
    async with router.get("/v1/nowhere") as response:
        status, error = await error_of(response)
    assert status == 404
    assert "/v1/nowhere" in error["message"]
    assert error["type"] == "not_found_error"
    assert set(error) == {"message", "type", "param", "code"}


async def test_wrong_method_is_json_405(router):
    async with router.get("/v1/completions") as response:
        status, error = await error_of(response)
    assert status == 405
    assert "use POST" in error["message"]
    assert response.headers["Allow"] == "POST"
