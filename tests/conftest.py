"""Shared fixtures: the real SmolLM2 model and a tiny random Llama with its tokenizer."""

from __future__ import annotations

import pytest
import torch

# One intra-op thread per test process: with more busy processes than cores,
# torch's worker threads wait on each other, and the batched identity test ran
# about ten times slower with two threads than with one on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct in float32 on CPU, converted once into the disagg cache."""
    from disagg_worker.model import load_model

    return load_model("smollm2", dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Folder with a randomly initialised 2-layer Llama and the SmolLM2 tokenizer."""
    from disagg_worker.model import load_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """LoadedModel of `tiny_model_dir`, float32 on CPU."""
    from disagg_worker.model import load_model

    return load_model(str(tiny_model_dir), dtype="float32", device="cpu")
