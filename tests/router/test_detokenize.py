"""Incremental detokenization keeps multi-byte characters whole; stop matching."""

from __future__ import annotations

import pytest
from disagg_worker.router.detokenize import IncrementalDetokenizer, StopMatcher

TEXTS = [
    "plain ascii text, with spaces",
    "héllo wörld — naïve café",
    "日本語のテキストです",
    "emoji 🎉🚀 and 👩‍👩‍👧 family",
    "mixed: Ελληνικά, русский, עברית, 中文",
]


@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_equals_full_decode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.add([token_id]) for token_id in ids]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True)
    assert not any("\ufffd" in delta for delta in deltas)


def test_split_character_held_back(tokenizer):
    ids = tokenizer.encode("🎉", add_special_tokens=False)
    assert len(ids) > 1, "the emoji must span several byte-level tokens for this test"
    detokenizer = IncrementalDetokenizer(tokenizer)
    assert detokenizer.add(ids[:1]) == ""
    assert detokenizer.add(ids[1:]) == "🎉"


def test_special_tokens_skipped(tokenizer):
    ids = [*tokenizer.encode("done", add_special_tokens=False), tokenizer.eos_token_id]
    detokenizer = IncrementalDetokenizer(tokenizer)
    text = "".join(detokenizer.add([token_id]) for token_id in ids) + detokenizer.flush()
    assert text == "done"


def test_stop_matcher_holds_partial_match():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("abc ST") == "abc "
    assert matcher.feed("OP more") == ""
    assert matcher.stopped


def test_stop_matcher_releases_false_alarm():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ""
    assert matcher.feed("ART") == "START"
    assert matcher.flush() == ""
    assert not matcher.stopped


def test_stop_matcher_earliest_sequence_wins():
    matcher = StopMatcher(["world", "lo"])
    assert matcher.feed("hello world") == "hel"
