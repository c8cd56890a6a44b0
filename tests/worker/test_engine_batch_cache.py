"""BatchedCache: left padding on join, trimming on leave, attention mask."""

from __future__ import annotations

import torch
from disagg_worker.engine.batch import BatchedCache


def request_tensors(tokens: int, fill: float, layers: int = 2) -> list[torch.Tensor]:
    return [torch.full((1, 2, tokens, 4), fill) for _ in range(2 * layers)]


def test_join_pads_shorter_rows_on_the_left():
    batch = BatchedCache()
    batch.add([request_tensors(3, 1.0), request_tensors(5, 2.0)])
    assert batch.pads == [2, 0]
    assert batch.length == 5
    keys = batch.cache.layers[0].keys
    assert torch.equal(keys[0, :, :2], torch.zeros(2, 2, 4))
    assert torch.equal(keys[0, :, 2:], torch.ones(2, 3, 4))
    assert torch.equal(keys[1], torch.full((2, 5, 4), 2.0))


def test_longer_newcomer_shifts_existing_rows():
    batch = BatchedCache()
    batch.add([request_tensors(2, 1.0)])
    batch.add([request_tensors(6, 2.0)])
    assert batch.pads == [4, 0]
    assert batch.length == 6


def test_leave_trims_shared_padding():
    batch = BatchedCache()
    batch.add([request_tensors(3, 1.0), request_tensors(5, 2.0), request_tensors(4, 3.0)])
    batch.remove([1])
    assert batch.pads == [1, 0]
    assert batch.length == 4
    assert torch.equal(batch.cache.layers[1].values[1], torch.full((2, 4, 4), 3.0))


def test_last_leave_empties_batch():
    batch = BatchedCache()
    batch.add([request_tensors(3, 1.0)])
    batch.remove([0])
    assert batch.rows == 0
    assert batch.cache is None


def test_attention_mask_hides_padding_and_adds_new_column():
    batch = BatchedCache()
    batch.add([request_tensors(1, 1.0), request_tensors(3, 2.0)])
    expected = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(batch.attention_mask(), expected)
