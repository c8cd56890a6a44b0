"""Sampling: parameter validation, greedy and top-p draws, seeded determinism."""

from __future__ import annotations

import pytest
import torch
from disagg_worker.sampling import SamplingParams, sample, sample_batch


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_params_name_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_with_seed_keeps_given_seed():
    assert SamplingParams(temperature=1.0, seed=5).with_seed().seed == 5


def test_with_seed_draws_missing_seed():
    assert SamplingParams(temperature=1.0).with_seed().seed is not None


def test_greedy_returns_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, SamplingParams(), step_index=0) == 1


def test_same_seed_and_step_same_token():
    torch.manual_seed(0)
    logits = torch.randn(1000)
    params = SamplingParams(temperature=1.0, seed=42)
    draws = {sample(logits, params, step_index=3) for _ in range(5)}
    assert len(draws) == 1


def test_steps_draw_independently():
    logits = torch.zeros(1000)
    params = SamplingParams(temperature=1.0, seed=42)
    draws = {sample(logits, params, step_index=step) for step in range(20)}
    assert len(draws) > 10


def test_small_top_p_keeps_only_top_token():
    torch.manual_seed(0)
    logits = torch.randn(500)
    top = int(torch.argmax(logits))
    params = SamplingParams(temperature=2.0, top_p=1e-6, seed=1)
    assert {sample(logits, params, step) for step in range(30)} == {top}


def test_top_p_draws_only_from_nucleus():
    # Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two tokens.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    params = SamplingParams(temperature=1.0, top_p=0.75, seed=3)
    draws = {sample(logits, params, step) for step in range(200)}
    assert draws == {0, 1}


def test_batch_matches_rows():
    torch.manual_seed(0)
    logits = torch.randn(4, 300)
    params = [
        SamplingParams(),
        SamplingParams(temperature=0.8, seed=1),
        SamplingParams(temperature=1.2, top_p=0.9, seed=2),
        SamplingParams(),
    ]
    steps = [0, 5, 9, 2]
    expected = [sample(logits[row], params[row], steps[row]) for row in range(4)]
    assert sample_batch(logits, params, steps) == expected


def test_batch_length_mismatch_raises():
    with pytest.raises(ValueError, match="must match"):
        sample_batch(torch.zeros(2, 10), [SamplingParams()], [0, 1])


def test_unseeded_sampling_raises():
    with pytest.raises(ValueError, match="with_seed"):
        sample(torch.zeros(10), SamplingParams(temperature=1.0), step_index=0)
