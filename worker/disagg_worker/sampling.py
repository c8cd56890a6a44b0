"""Token sampling shared by the prefill and decode engines.

Every random draw uses a torch.Generator seeded from (request seed, step
index), where step 0 is the first generated token. A request therefore gets
the same tokens whether its first token was sampled on a prefill replica and
the rest on a decode replica, or all on one replica.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

# Seeds are stored in the protocol as uint64.
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request.

    temperature: softmax temperature; 0 selects greedy decoding (argmax).
    top_p: nucleus mass in (0, 1]; 1 keeps every token.
    seed: seed of the random draws; None lets `with_seed` draw one. The
        prefill and decode engines then draw different seeds, so only an
        explicit seed makes a split request reproducible.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature):
            raise ValueError(f"temperature must be a finite number, got {self.temperature!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise ValueError(
                f"seed must be an integer in [0, 2**64 - 1] or None, got {self.seed!r}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_seed(self) -> SamplingParams:
        """Return these settings with a random seed drawn when none was given."""
        if self.seed is not None:
            return self
        return replace(self, seed=secrets.randbits(63))


def step_generator(seed: int, step_index: int) -> torch.Generator:
    """Return a CPU generator seeded from (seed, step_index)."""
    material = f"{seed}:{step_index}".encode()
    # torch.Generator.manual_seed accepts at most 64 bits.
    derived = int.from_bytes(hashlib.sha256(material).digest()[:8], "little")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derived)
    return generator


def sample(logits_row: torch.Tensor, params: SamplingParams, step_index: int) -> int:
    """Pick the next token id from one row of logits ([vocab])."""
    if params.greedy:
        return int(torch.argmax(logits_row).item())
    if params.seed is None:
        raise ValueError("seed must be set before sampling; call SamplingParams.with_seed() first")

    # Temperature and top-p in float32 on the CPU, so the draw does not depend
    # on the device or dtype the logits came from.
    scaled = logits_row.detach().to(device="cpu", dtype=torch.float32) / params.temperature
    probabilities = torch.softmax(scaled, dim=-1)
    if params.top_p < 1:
        probabilities = _top_p_filter(probabilities, params.top_p)
    generator = step_generator(params.seed, step_index)
    return int(torch.multinomial(probabilities, 1, generator=generator).item())


def sample_batch(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    step_indices: Sequence[int],
) -> list[int]:
    """Pick one token per row of `logits` ([batch, vocab]).

    Greedy rows share one argmax; sampled rows draw one by one because each
    has its own generator. Row i gives the same token as
    `sample(logits[i], params[i], step_indices[i])`.
    """
    if not len(params) == len(step_indices) == logits.shape[0]:
        raise ValueError(
            f"got {logits.shape[0]} logits rows, {len(params)} params and "
            f"{len(step_indices)} step indices; they must match"
        )
    tokens = torch.argmax(logits, dim=-1).tolist()
    for row, row_params in enumerate(params):
        if not row_params.greedy:
            tokens[row] = sample(logits[row], row_params, step_indices[row])
    return [int(token) for token in tokens]


def _top_p_filter(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set whose mass reaches top_p, then renormalize."""
    sorted_probabilities, order = torch.sort(probabilities, descending=True)
    cumulative = torch.cumsum(sorted_probabilities, dim=-1)
    # A token stays when the mass before it is below top_p; the first always stays.
    keep_sorted = (cumulative - sorted_probabilities) < top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    filtered = torch.where(keep, probabilities, torch.zeros_like(probabilities))
    return filtered / filtered.sum()
