"""count_fallbacks turns the routers' local-prefill counters into fallbacks since the last read."""

from __future__ import annotations

import pytest
from disagg_operator.autoscale import count_fallbacks

CASES = [
    # (case, previous totals, totals now, fallbacks, new baseline)
    ("first read sets baseline only", None, {"r0": 7.0}, 0, {"r0": 7.0}),
    ("growth 7 to 10 counts 3", {"r0": 7.0}, {"r0": 10.0}, 3, {"r0": 10.0}),
    (
        "two routers add up",
        {"r0": 1.0, "r1": 2.0},
        {"r0": 2.0, "r1": 4.0},
        3,
        {"r0": 2.0, "r1": 4.0},
    ),
    (
        "new router counts whole total",
        {"r0": 1.0},
        {"r0": 1.0, "r1": 4.0},
        4,
        {"r0": 1.0, "r1": 4.0},
    ),
    ("reset 9 to 2 counts 2", {"r0": 9.0}, {"r0": 2.0}, 2, {"r0": 2.0}),
    ("silent router keeps baseline", {"r0": 5.0}, {"r0": None}, 0, {"r0": 5.0}),
    ("silent new router has no baseline", {}, {"r0": None}, 0, {}),
    ("gone router is dropped", {"r0": 5.0, "r1": 1.0}, {"r0": 5.0}, 0, {"r0": 5.0}),
]


@pytest.mark.parametrize(
    ("previous", "totals", "fallbacks", "baseline"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_count_fallbacks(previous, totals, fallbacks, baseline):
    counted, new_baseline = count_fallbacks(previous, totals)

    assert counted == fallbacks
    assert new_baseline == baseline
