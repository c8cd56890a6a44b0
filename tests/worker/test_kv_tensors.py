"""KV tensors: cache conversion and the byte payload of a KV transfer."""

from __future__ import annotations

import pytest
import torch
from disagg_worker.engine.forward import run_prompt
from disagg_worker.kv import (
    cache_to_tensors,
    kv_shapes,
    tensors_from_bytes,
    tensors_nbytes,
    tensors_to_bytes,
    tensors_to_cache,
)


def test_cache_to_tensors_order_and_shapes(tiny_model):
    _, cache = run_prompt(tiny_model, [5, 6, 7, 8])
    tensors = cache_to_tensors(cache)
    assert len(tensors) == 2 * tiny_model.num_layers
    expected = kv_shapes(tiny_model.num_layers, tiny_model.num_kv_heads, 4, tiny_model.head_dim)
    assert [tuple(tensor.shape) for tensor in tensors] == expected
    assert tensors[2] is cache.layers[1].keys
    assert tensors[3] is cache.layers[1].values


def test_kv_bytes_per_token_matches_tensors(tiny_model):
    _, cache = run_prompt(tiny_model, [5, 6, 7])
    assert tensors_nbytes(cache_to_tensors(cache)) == 3 * tiny_model.kv_bytes_per_token


def test_rebuilt_cache_continues_like_original(tiny_model):
    logits, cache = run_prompt(tiny_model, [11, 12, 13, 14, 15])
    token = torch.tensor([[int(torch.argmax(logits))]])
    copies = [tensor.clone() for tensor in cache_to_tensors(cache)]
    rebuilt = tensors_to_cache(copies)
    with torch.inference_mode():
        original = tiny_model.model(input_ids=token, cache=cache, use_cache=True).logits
        again = tiny_model.model(input_ids=token, cache=rebuilt, use_cache=True).logits
    assert torch.equal(original, again)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_bytes_round_trip(dtype):
    torch.manual_seed(1)
    tensors = [torch.randn(1, 2, 3, 4).to(dtype) for _ in range(4)]
    payload = tensors_to_bytes(tensors)
    assert len(payload) == tensors_nbytes(tensors)
    restored = tensors_from_bytes(payload, [tensor.shape for tensor in tensors], dtype)
    for original, copy in zip(tensors, restored, strict=True):
        assert torch.equal(original, copy)


def test_bytearray_payload_is_used_in_place():
    payload = bytearray(tensors_to_bytes([torch.ones(1, 1, 2, 2)]))
    (tensor,) = tensors_from_bytes(payload, [(1, 1, 2, 2)], torch.float32)
    payload[:4] = tensors_to_bytes([torch.tensor([5.0])])
    assert tensor[0, 0, 0, 0] == 5.0


def test_bytes_of_wrong_size_raise():
    with pytest.raises(ValueError, match="need 96 bytes"):
        tensors_from_bytes(b"\0" * 95, [(1, 2, 3, 4)], torch.float32)


def test_odd_tensor_count_raises():
    with pytest.raises(ValueError, match="key and a value"):
        tensors_to_cache([torch.zeros(1, 1, 1, 1)] * 3)
