"""Renames learned as words, made wherever the word occurs in the source, whichever token carries it.

A replacement learned token by token (follower.py) edits only later occurrences that are the same
token. A renamed identifier is not: in calendar.py's `isleap`, `year` comes as "(year", " year" and
"year" (after "("), and the model writes "(y" "r", " yr", "yr" for them. Traced with Predicted
Outputs on "Rename the parameter year to yr everywhere" (the 1.5B), every occurrence failed a draft
and cost one to three one-token decodes before the cursor was found again (tau 6.7, where the
reply itself as the prediction gives 25.6). So when a learned replacement renames words (the same
words in the same order but for identifiers written differently), each such word is renamed in
every later source token that holds it whole, and that token's text, renamed, is tokenized again
for the draft.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def _is_word_byte(b: bytes) -> bool:
    return bool(b) and (b.isalnum() or b == b"_")


class WordRenames:
    """`vocab`: piece(token) -> bytes and tokenize(text, add_special=False) (the target's vocabulary)."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.words: dict[bytes, bytes] = {}  # identifier in the source -> what the output writes for it
        self._made: dict[tuple[int, bool, bool], tuple[int, ...] | None] = {}  # (token, word before, word after) -> renamed

    def learn(self, source: Sequence[int], start: int, end: int, instead: Sequence[int]) -> None:
        """The output wrote `instead` for source[start:end]: keep the renames it makes (none unless
        the span starts and ends at word boundaries and both sides hold as many words)."""
        piece = self.vocab.piece
        old = b"".join(piece(int(t)) for t in source[start:end])
        new = b"".join(piece(int(t)) for t in instead)
        before = piece(int(source[start - 1])) if start > 0 else b""
        after = piece(int(source[end])) if end < len(source) else b""
        if (_is_word_byte(old[:1]) and _is_word_byte(before[-1:])) or (_is_word_byte(old[-1:]) and _is_word_byte(after[:1])):
            return  # the span cuts a word: what it renames is not a whole identifier
        a, b = WORD.findall(old), WORD.findall(new)
        if not a or len(a) != len(b) or WORD.sub(b"", old) != WORD.sub(b"", new):
            return  # not the same text but for identifiers
        pairs = {x: y for x, y in zip(a, b) if x != y}
        if pairs and all(self.words.get(x, y) == y for x, y in pairs.items()):
            self.words.update(pairs)
            self._made.clear()

    def renamed(self, source: Sequence[int], i: int) -> tuple[int, ...] | None:
        """source[i] with the learned renames made (its tokens), or None where it holds none whole."""
        if not self.words:
            return None
        piece = self.vocab.piece
        token = int(source[i])
        word_before = i > 0 and _is_word_byte(piece(int(source[i - 1]))[-1:])
        word_after = i + 1 < len(source) and _is_word_byte(piece(int(source[i + 1]))[:1])
        key = (token, word_before, word_after)
        if key not in self._made:
            self._made[key] = self._rename(piece(token), word_before, word_after)
        return self._made[key]

    def _rename(self, text: bytes, word_before: bool, word_after: bool) -> tuple[int, ...] | None:
        out, at, changed = [], 0, False
        for m in WORD.finditer(text):
            new = self.words.get(m.group())
            cut = (m.start() == 0 and word_before) or (m.end() == len(text) and word_after)
            if new is None or cut:
                continue
            out += [text[at : m.start()], new]
            at, changed = m.end(), True
        if not changed:
            return None
        renamed = (b"".join(out) + text[at:]).decode("utf-8", errors="ignore")
        tokens = tuple(int(t) for t in self.vocab.tokenize(renamed, add_special=False))
        return tokens or None
