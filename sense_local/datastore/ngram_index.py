"""Exact n-gram lookup over a token stream (REST-style lexical retrieval), built with numpy.

For each n in NGRAM_SIZES we keep the rolling hashes of every n-gram, sorted, with the position
where each n-gram ends; a query hashes the context's last n tokens, finds equal hashes by binary
search and checks the tokens themselves (hash collisions cannot produce a wrong match).
Longest n first, as REST's suffix-array search does.
"""
from __future__ import annotations

import numpy as np

NGRAM_SIZES = (16, 12, 8, 6, 4, 3, 2)
_BASE = np.uint64(0x9E3779B97F4A7C15)
_MASK = (1 << 64) - 1  # the uint64 hashes' wrapping, for Python integers


def _suffix_hashes(context: np.ndarray, longest: int) -> list[int]:
    """[min(longest, len(context)) + 1] the hash `_hashes` gives the context's last n tokens, for every
    n (entry 0: none), in one pass of Python integers: a query hashed per size with numpy took ~0.1 ms
    a step over the reply history's eight sizes."""
    out, h, power, base = [0], 0, 1, int(_BASE)
    for token in context[-1 : -min(longest, len(context)) - 1 : -1].tolist():
        h = (h + (token + 1) * power) & _MASK
        power = (power * base) & _MASK
        out.append(h)
    return out


def _hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """[T - n + 1] uint64 polynomial hashes of every n-gram (wrapping arithmetic)."""
    t = tokens.astype(np.uint64) + np.uint64(1)
    h = np.zeros(len(tokens) - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):
            h = h * _BASE + t[i : len(tokens) - n + 1 + i]
    return h


class NgramIndex:
    def __init__(self, tokens: np.ndarray, spans: np.ndarray | None = None, sizes=NGRAM_SIZES):
        """tokens: [T] int32 stream; spans: [D, 2] sorted (start, end) of the live documents in it
        (matches must lie inside one, continuations stop at its end). Default: one document."""
        self.tokens = np.asarray(tokens, np.int32)
        spans = np.asarray(spans if spans is not None else [[0, len(tokens)]], np.int64).reshape(-1, 2)
        self.doc_starts, self.doc_ends = spans[:, 0], spans[:, 1]
        self.tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n in sizes:
            if len(self.tokens) <= n:
                continue
            h = _hashes(self.tokens, n)
            order = np.argsort(h, kind="stable")
            self.tables[n] = (h[order], (order + n).astype(np.int64))  # position just after the n-gram

    @classmethod
    def of_store(cls, store, sizes=NGRAM_SIZES) -> "NgramIndex":
        """A document store's token stream, its live documents as the spans."""
        docs = sorted(store.manifest.documents.values(), key=lambda d: d.start)
        tokens = store.tokens(0, store.manifest.n_tokens)
        return cls(tokens, np.array([[d.start, d.end] for d in docs] or [[0, len(tokens)]]), sizes)

    def lookup(self, context: np.ndarray, max_matches: int = 32, length: int = 10):
        """Continuations [m, length] (-1 padded at document ends) after the longest n-gram of the
        context's suffix found in the stream, and that n (0 when nothing matched). The rows are
        the latest `max_matches` matches in stream order, oldest first (drafters/rest.py weighs
        newer ones more)."""
        context = np.asarray(context, np.int32)
        suffix = _suffix_hashes(context, max(self.tables, default=0))  # [n] the last n tokens' hash
        for n, (hashes, after) in self.tables.items():
            if len(context) < n:
                continue
            key = np.uint64(suffix[n])
            lo = int(hashes.searchsorted(key, "left"))
            if lo == len(hashes) or hashes[lo] != key:
                continue
            hi = int(hashes.searchsorted(key, "right"))
            starts = after[lo:hi]
            starts = starts[-max_matches * 2 :]
            # verify the tokens (no collisions) and that a continuation exists
            grams = self.tokens[starts[:, None] - n + np.arange(n)[None, :]]
            doc = np.clip(np.searchsorted(self.doc_starts, starts - n, side="right") - 1, 0, None)
            inside = (starts - n >= self.doc_starts[doc]) & (starts < self.doc_ends[doc])  # has a continuation
            keep = (grams == context[-n:]).all(1) & inside
            starts, ends = starts[keep][-max_matches:], self.doc_ends[doc][keep][-max_matches:]
            if len(starts) == 0:
                continue
            idx = starts[:, None] + np.arange(length)[None, :]  # [m, length]
            conts = np.where(idx < ends[:, None], self.tokens[np.minimum(idx, len(self.tokens) - 1)], -1)
            return conts.astype(np.int32), n
        return np.zeros((0, length), np.int32), 0
