"""Wording helpers for messages printed to users."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """Return the count and its noun in the right number: "1 request", "2 requests"."""
    noun = singular if count == 1 else (plural or f"{singular}s")
    return f"{count} {noun}"
