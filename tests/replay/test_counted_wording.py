"""Counts in printed messages take the right number: "1 request", "2 requests"."""

from __future__ import annotations

import pytest
from disagg_worker.cli import main
from disagg_worker.text import counted


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 requests"), (1, "1 request"), (2, "2 requests")],
)
def test_request_counts(count, expected):
    assert counted(count, "request") == expected


def test_irregular_plural():
    assert counted(3, "replica-second", "replica-seconds") == "3 replica-seconds"


def test_malformed_row_singular(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:47.0000000,bad,5\n"
    )

    main(["simulate", "--trace", str(trace), "--policies", "static_peak"])

    err = capsys.readouterr().err
    assert "skipped 1 malformed row of" in err
    assert "simulating 1 request\n" in err
