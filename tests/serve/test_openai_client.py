"""The official openai client against `disagg serve` gets transformers' greedy outputs."""

from __future__ import annotations

import openai
import pytest
import torch

from .harness import ServeProcess

pytestmark = pytest.mark.model

# Chat prompts shorter than this are prefilled locally, longer ones remotely.
MIN_REMOTE_PREFILL_TOKENS = 64
MAX_TOKENS = 24

SHORT_QUESTION = "What is the capital of France?"
LONG_QUESTION = (
    "Here is a short story. A fox lived at the edge of a quiet forest. Every morning it "
    "walked to the river, watched the fish and the birds, and came back home before noon. "
    "One day a storm flooded the river and the fox had to find a new path through the hills. "
    "In one sentence, what did the fox do every morning?"
)


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    process = ServeProcess(
        [
            "--prefill-replicas",
            "1",
            "--decode-replicas",
            "1",
            "--min-remote-prefill-tokens",
            str(MIN_REMOTE_PREFILL_TOKENS),
        ],
        tmp_path_factory.mktemp("serve") / "serve.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(serve):
    with openai.OpenAI(base_url=serve.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def reference_answer(smollm2, question: str) -> tuple[str, int]:
    """Greedy answer of transformers' own generate on the chat-templated prompt."""
    tokenizer = smollm2.tokenizer
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    ids = list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    with torch.no_grad():
        output = smollm2.model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
        )
    return tokenizer.decode(output[0][len(ids) :], skip_special_tokens=True), len(ids)


@pytest.mark.parametrize(
    ("question", "prefill"), [(SHORT_QUESTION, "local"), (LONG_QUESTION, "remote")]
)
def test_chat_equals_transformers_generate(client, smollm2, question, prefill):
    expected, prompt_tokens = reference_answer(smollm2, question)
    assert (prompt_tokens >= MIN_REMOTE_PREFILL_TOKENS) == (prefill == "remote")
    result = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert result.choices[0].message.content == expected
    assert result.usage.prompt_tokens == prompt_tokens


@pytest.mark.parametrize("question", [SHORT_QUESTION, LONG_QUESTION])
def test_chat_stream_equals_transformers_generate(client, smollm2, question):
    expected, _ = reference_answer(smollm2, question)
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected
    assert chunks[-1].usage.prompt_tokens > 0


def test_both_prefill_paths_used(serve):
    from .harness import metric_value

    metrics_url = serve.url + "/metrics"
    local = metric_value(metrics_url, "disagg_time_to_first_token_seconds_count", prefill="local")
    remote = metric_value(metrics_url, "disagg_time_to_first_token_seconds_count", prefill="remote")
    assert local and local >= 2
    assert remote and remote >= 2


def test_completion_stream_with_token_ids(client):
    stream = client.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt=list(range(2000, 2100)),
        max_tokens=5,
        stream=True,
        extra_body={"ignore_eos": True},
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 100


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi", max_tokens=2)


def test_over_context_is_400(client):
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(
            model="SmolLM2-135M-Instruct", prompt=[2000] * 8000, max_tokens=500
        )
