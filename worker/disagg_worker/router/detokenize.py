"""Incremental detokenization and stop-sequence matching for streamed output.

A byte-level BPE token can end in the middle of a multi-byte UTF-8
character, so decoding tokens one at a time would emit U+FFFD replacement
characters. `IncrementalDetokenizer` decodes a short window of recent
tokens (the previous delta's tokens give the decoder context for spaces
and merges) and withholds text while it ends in an incomplete character.
The concatenation of everything it emits equals
`tokenizer.decode(all_ids, skip_special_tokens=True)`.
"""

from __future__ import annotations

REPLACEMENT_CHARACTER = "\ufffd"


class IncrementalDetokenizer:
    """Turns a stream of token ids into text deltas, keeping characters whole."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        # token_ids[prefix_offset:read_offset] is text already emitted that
        # gives the decoder context for the tokens after it.
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def add(self, token_ids: list[int]) -> str:
        """Append tokens; return the newly completed text (may be empty)."""
        self.token_ids.extend(token_ids)
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHARACTER):
            # Either nothing printable was added (a special token) or the
            # last character is still incomplete: wait for more tokens.
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.token_ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Return text still held back at the end of the stream, even if incomplete."""
        prefix_text = self._decode(self.token_ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self.token_ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self.token_ids)
        return new_text[len(prefix_text) :]


class StopMatcher:
    """Finds OpenAI `stop` sequences in streamed text.

    Text that could be the start of a stop sequence is held back until the
    next delta shows whether it is one, so a streamed reply never contains
    part of a stop sequence. The returned text never includes the stop
    sequence itself, as in the OpenAI API.
    """

    def __init__(self, stop: list[str]) -> None:
        self._stop = [sequence for sequence in stop if sequence]
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add a delta; return the text safe to emit. Sets `stopped` on a match."""
        if self.stopped:
            return ""
        if not self._stop:
            return delta
        text = self._held + delta
        matches = [(text.find(sequence), sequence) for sequence in self._stop]
        found = [index for index, _ in matches if index >= 0]
        if found:
            self.stopped = True
            self._held = ""
            return text[: min(found)]
        keep = self._longest_partial_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """Return held-back text at the end of the stream (it was no stop sequence)."""
        text, self._held = self._held, ""
        return "" if self.stopped else text

    def _longest_partial_suffix(self, text: str) -> int:
        # Length of the longest suffix of `text` that is a proper prefix of a
        # stop sequence.
        longest = 0
        for sequence in self._stop:
            for length in range(min(len(sequence) - 1, len(text)), longest, -1):
                if text.endswith(sequence[:length]):
                    longest = length
                    break
        return longest
