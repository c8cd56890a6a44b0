"""Batched KV cache for continuous batching, left-padded to a common length.

Row i contains `pads[i]` padding columns followed by that request's real KV.
Keys are stored after the rotary embedding was applied at each token's own
position, so requests prefilled separately can share one padded cache: the
attention mask hides the padding and each row gets its own position ids.

The cache is rebuilt only when batch membership changes: `add` left-pads the
shorter side and concatenates rows, `remove` drops rows and trims padding
columns that every remaining row has. A decode step appends one column to
every row (transformers' DynamicLayer.update).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as functional
from transformers import DynamicCache


class BatchedCache:
    """Left-padded DynamicCache of the running requests, one row per request."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.pads: list[int] = []

    @property
    def rows(self) -> int:
        return len(self.pads)

    @property
    def length(self) -> int:
        """Columns per row: padding plus real tokens of the longest row."""
        if self.cache is None:
            return 0
        return self.cache.get_seq_length()

    def add(self, requests: Sequence[Sequence[torch.Tensor]]) -> None:
        """Append one row per request, each a flat [key, value, ...] list with batch 1."""
        if not requests:
            return

        # Every row is left-padded once to the longest length, then all rows are stacked.
        layer_count = len(requests[0]) // 2
        new_lengths = [tensors[0].shape[-2] for tensors in requests]
        length = max(self.length, *new_lengths)
        shift = length - self.length
        keys_by_layer: list[list[torch.Tensor]] = [[] for _ in range(layer_count)]
        values_by_layer: list[list[torch.Tensor]] = [[] for _ in range(layer_count)]
        for layer, pair in enumerate(self._layers() or []):
            keys, values = _pad_left(pair, shift)
            keys_by_layer[layer].append(keys)
            values_by_layer[layer].append(values)
        pads = [pad + shift for pad in self.pads]
        for tensors, new_length in zip(requests, new_lengths, strict=True):
            for layer in range(layer_count):
                pair = (tensors[2 * layer], tensors[2 * layer + 1])
                keys, values = _pad_left(pair, length - new_length)
                keys_by_layer[layer].append(keys)
                values_by_layer[layer].append(values)
            pads.append(length - new_length)

        self.pads = pads
        self.cache = DynamicCache(
            [
                (torch.cat(keys), torch.cat(values))
                for keys, values in zip(keys_by_layer, values_by_layer, strict=True)
            ]
        )

    def remove(self, rows: Sequence[int]) -> None:
        """Drop `rows` (indices into the current batch) and trim shared padding."""
        if not rows:
            return
        drop = set(rows)
        keep = [row for row in range(self.rows) if row not in drop]
        if not keep:
            self.cache, self.pads = None, []
            return
        self.pads = [self.pads[row] for row in keep]
        # Columns that are padding in every remaining row carry nothing.
        trim = min(self.pads)
        self.pads = [pad - trim for pad in self.pads]
        index = torch.tensor(keep, dtype=torch.long, device=self._device())
        layers = [
            (
                keys.index_select(0, index)[:, :, trim:, :],
                values.index_select(0, index)[:, :, trim:, :],
            )
            for keys, values in self._layers()
        ]
        self.cache = DynamicCache(layers)

    def attention_mask(self, new_tokens: int = 1) -> torch.Tensor:
        """Return the [rows, length + new_tokens] mask: 0 on padding, 1 elsewhere."""
        columns = torch.arange(self.length + new_tokens, device=self._device())
        pads = torch.tensor(self.pads, device=self._device())
        return (columns.unsqueeze(0) >= pads.unsqueeze(1)).long()

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        if self.cache is None:
            return None
        return [(layer.keys, layer.values) for layer in self.cache.layers]

    def _device(self) -> torch.device:
        if self.cache is None:
            return torch.device("cpu")
        return self.cache.layers[0].keys.device


def _pad_left(
    pair: tuple[torch.Tensor, torch.Tensor], columns: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if columns == 0:
        return pair
    keys, values = pair
    # (0, 0) leaves head_dim alone; (columns, 0) adds zeros before the token axis.
    return functional.pad(keys, (0, 0, columns, 0)), functional.pad(values, (0, 0, columns, 0))
