"""Renames learned as words, made wherever the word occurs in the source, whichever token carries it.

A replacement learned token by token (follower.py) edits only later occurrences that are the same
token. A renamed identifier is not: in calendar.py's `isleap`, `year` comes as "(year", " year" and
"year" (after "("), and the model writes "(y" "r", " yr", "yr" for them. Traced with Predicted
Outputs on "Rename the parameter year to yr everywhere" (the 1.5B), every occurrence failed a draft
and cost one to three one-token decodes before the cursor was found again (tau 6.7, where the
reply itself as the prediction gives 25.6). So when a learned replacement renames words (the same
words in the same order but for identifiers written differently), each such word is renamed in
every later source token that holds it whole, and that token's text, renamed, is tokenized again
for the draft. A word split over tokens is renamed too: glob's `root_dir` is " root" "_dir" after a
space but "=root" "_dir" after "=", so the rename learned on the first missed the second (a 63-token
draft rejected at its 49th); the few tokens from the one where the word starts to the one where it
ends are renamed and tokenized again together (at most MAX_WORD_TOKENS).

A numbered family is renamed alike: where calendar's `leapdays(y1, y2)` became `(yr1, yr2)` under
"rename year to yr", `y1` -> `yr1` learned means `y2` -> `yr2` (and `year` -> `yr`, `year1` ->
`yr1`): a word that is a renamed word or stem and a number is renamed with the number kept. And a
renamed word is renamed where it is a part of a snake_case name: fnmatch's reply, renaming `pat` to
`pattern`, wrote `pattern_str` for `pat_str` (`_pat` becomes `_pattern`; `path` and dunder names,
`__name__` under a rename of `name`, stay).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
NUMBERED = re.compile(rb"(.*?[A-Za-z_])([0-9]+)")  # a word that ends in a number: (stem, number)
MAX_WORD_TOKENS = 4  # source tokens a renamed word may span


def is_word_byte(b: bytes) -> bool:
    return bool(b) and (b.isalnum() or b == b"_")


class WordRenames:
    """`vocab`: piece(token) -> bytes and tokenize(text, add_special=False) (the target's vocabulary)."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.words: dict[bytes, bytes] = {}  # identifier in the source -> what the output writes for it
        self.stems: dict[bytes, bytes] = {}  # stem of a renamed numbered word -> the output's stem
        self._made: dict[tuple, tuple[int, ...] | None] = {}  # (tokens, word before, word after) -> renamed

    def learn(self, source: Sequence[int], start: int, end: int, instead: Sequence[int]) -> bool:
        """The output wrote `instead` for source[start:end]: keep the renames it makes (none unless
        both sides, taken to the word boundaries around the span, hold as many words). Whether
        it renamed words."""
        piece = self.vocab.piece
        old = b"".join(piece(int(t)) for t in source[start:end])
        new = b"".join(piece(int(t)) for t in instead)
        # a span that cuts a word (" root" -> " base" before "_dir") takes in the source tokens
        # around it that the word goes on in, on both sides alike
        for _ in range(MAX_WORD_TOKENS):
            after = piece(int(source[end])) if end < len(source) else b""
            if not (is_word_byte(old[-1:]) and is_word_byte(after[:1])):
                break
            old, new, end = old + after, new + after, end + 1
        for _ in range(MAX_WORD_TOKENS):
            before = piece(int(source[start - 1])) if start > 0 else b""
            if not (is_word_byte(old[:1]) and is_word_byte(before[-1:])):
                break
            old, new, start = before + old, before + new, start - 1
        if (is_word_byte(old[:1]) and is_word_byte(before[-1:])) or (is_word_byte(old[-1:]) and is_word_byte(after[:1])):
            return False  # the word goes on further than that: not a rename of identifiers
        a, b = WORD.findall(old), WORD.findall(new)
        if not a or len(a) != len(b) or WORD.sub(b"", old) != WORD.sub(b"", new):
            return False  # not the same text but for identifiers
        pairs = {x: y for x, y in zip(a, b) if x != y}
        if pairs and all(self.words.get(x, y) == y for x, y in pairs.items()):
            self.words.update(pairs)
            for x, y in pairs.items():
                mx, my = NUMBERED.fullmatch(x), NUMBERED.fullmatch(y)
                if mx and my and mx.group(2) == my.group(2):
                    self.stems.setdefault(mx.group(1), my.group(1))
            self._made.clear()
            return True
        return False

    def _word_for(self, word: bytes) -> bytes | None:
        """What the output writes for `word`: a learned rename, or a numbered word's whose stem
        (or the word without its number) was renamed; None: the word is kept."""
        new = self.words.get(word)
        if new is None and (m := NUMBERED.fullmatch(word)):
            stem = self.words.get(m.group(1), self.stems.get(m.group(1)))
            new = None if stem is None else stem + m.group(2)
        if new is None and b"_" in word and not (word.startswith(b"__") and word.endswith(b"__")):  # snake_case, not __dunders__
            parts = word.split(b"_")
            renamed = [self.words.get(p, p) if p else p for p in parts]
            new = b"_".join(renamed) if renamed != parts else None
        return new

    def renamed(self, source: Sequence[int], i: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(source tokens from i, those tokens with the learned renames made) for the fewest tokens
        from i that hold whole a renamed word starting in source[i]; None where no such word starts."""
        if not self.words:
            return None
        piece = self.vocab.piece
        word_before = i > 0 and is_word_byte(piece(int(source[i - 1]))[-1:])
        for k in range(1, min(MAX_WORD_TOKENS, len(source) - i) + 1):
            span = tuple(int(t) for t in source[i : i + k])
            word_after = i + k < len(source) and is_word_byte(piece(int(source[i + k]))[:1])
            key = (span, word_before, word_after)
            if key not in self._made:
                self._made[key] = self._rename([piece(t) for t in span], word_before, word_after)
            if self._made[key] is not None:
                return span, self._made[key]
        return None

    def _rename(self, pieces: list[bytes], word_before: bool, word_after: bool) -> tuple[int, ...] | None:
        """The pieces' text with every renamed word it holds whole made, tokenized; None unless one
        of them starts in the first piece."""
        text = b"".join(pieces)
        out, at, starts_here = [], 0, False
        for m in WORD.finditer(text):
            new = self._word_for(m.group())
            cut = (m.start() == 0 and word_before) or (m.end() == len(text) and word_after)
            if new is None or cut:
                continue
            out += [text[at : m.start()], new]
            at, starts_here = m.end(), starts_here or m.start() < len(pieces[0])
        if not starts_here:
            return None
        renamed = (b"".join(out) + text[at:]).decode("utf-8", errors="ignore")
        tokens = tuple(int(t) for t in self.vocab.tokenize(renamed, add_special=False))
        return tokens or None
