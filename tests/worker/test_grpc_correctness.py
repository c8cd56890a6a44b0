"""Greedy output through gRPC equals transformers' generate, token for token (real SmolLM2).

Remote prefill runs prefill replica -> KV transfer -> decode replica; local
prefill runs Decode.Generate with the prompt. Both replicas share one loaded
model in this process.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
import torch
from disagg_worker.proto import worker_pb2 as pb
from disagg_worker.server.defaults import DEFAULT_CHUNK_BYTES
from grpc_support import generate, running_server, stubs

pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

MAX_TOKENS = 8
LONG_TEXT = (
    "Disaggregated serving runs the prefill and decode phases of a language model on "
    "separate pools of workers. The prefill worker processes the whole prompt once and "
    "streams the key and value cache to a decode worker, which then produces one token "
    "per step for every running request."
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(smollm2):
    async with (
        running_server("decode", smollm2) as (_, decode_address),
        running_server("prefill", smollm2) as (_, prefill_address),
        stubs(decode_address) as decode_client,
        stubs(prefill_address) as prefill_client,
    ):
        yield decode_address, decode_client, prefill_client


def prompts(tokenizer) -> dict[str, list[int]]:
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
    )["input_ids"]
    return {
        "one_token": tokenizer.encode("The")[:1],
        "few_tokens": tokenizer.encode("The capital of France is"),
        "chat": list(chat),
        # 54 tokens x 46,080 bytes of float32 KV is about 2.5 MB, five 512 KiB chunks.
        "multi_chunk": tokenizer.encode(LONG_TEXT),
    }


def reference(loaded, prompt: list[int]) -> list[int]:
    input_ids = torch.tensor([prompt])
    with torch.inference_mode():
        output = loaded.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
        )
    return output[0, len(prompt) :].tolist()


CASES = ["one_token", "few_tokens", "chat", "multi_chunk"]


@pytest.mark.parametrize("case", CASES)
async def test_remote_prefill_matches_generate(replicas, smollm2, case):
    decode_address, decode_client, prefill_client = replicas
    prompt = prompts(smollm2.tokenizer)[case]
    request_id = f"remote-{case}"

    reply = await prefill_client.prefill.Prefill(
        pb.PrefillRequest(
            request_id=request_id, prompt_token_ids=prompt, decode_address=decode_address
        ),
        timeout=120,
    )
    rest, _ = await generate(
        decode_client.decode,
        pb.GenerateRequest(request_id=request_id, max_tokens=MAX_TOKENS, remote_kv=True),
        timeout=120,
    )

    assert [reply.first_token_id, *rest] == reference(smollm2, prompt)
    if case == "multi_chunk":
        assert reply.kv_bytes > 2 * DEFAULT_CHUNK_BYTES


@pytest.mark.parametrize("case", CASES)
async def test_local_prefill_matches_generate(replicas, smollm2, case):
    _, decode_client, _ = replicas
    prompt = prompts(smollm2.tokenizer)[case]

    tokens, _ = await generate(
        decode_client.decode,
        pb.GenerateRequest(
            request_id=f"local-{case}", max_tokens=MAX_TOKENS, prompt=pb.TokenIds(ids=prompt)
        ),
        timeout=120,
    )

    assert tokens == reference(smollm2, prompt)
