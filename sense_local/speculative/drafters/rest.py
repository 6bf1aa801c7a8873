"""REST baseline: lexical retrieval over the document store's tokens.

The longest suffix of the context (16 down to 2 tokens) is matched exactly in the document token
stream; the continuations of the matches are merged into a trie and its most frequent path is the
draft. It exists to show what navigating by hidden states adds over surface matching.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...datastore.ngram_index import NgramIndex
from ..types import Draft, Feedback
from .base import AcceptanceEstimate, Drafter
from .trie import heaviest_path

MATCH_BUCKETS = (3, 4, 8, 12)  # matched suffix length: 2 | 3 | 4-7 | 8-11 | 12+
PRIORS = {b: (0.3, 0.4, 0.55, 0.7, 0.8)[b] for b in range(len(MATCH_BUCKETS) + 1)}


def ngram_index_for(store) -> NgramIndex:
    """The store's token stream indexed for exact matching (built once per store object)."""
    cached = getattr(store, "_ngram_index", None)
    if cached is None:
        docs = sorted(store.manifest.documents.values(), key=lambda d: d.start)
        tokens = store.tokens(0, store.manifest.n_tokens)
        cached = NgramIndex(tokens, np.array([[d.start, d.end] for d in docs] or [[0, len(tokens)]]))
        store._ngram_index = cached
    return cached


class RestDrafter(Drafter):
    name = "rest"

    def __init__(self, store, max_len: int = 16):
        self.index = ngram_index_for(store)
        self.max_len = max_len
        self.ctx: list[int] = []
        self.estimate = AcceptanceEstimate(PRIORS)

    def begin(self, prompt: Sequence[int]) -> None:
        self.ctx = [int(t) for t in prompt]

    def extend(self, tokens: Sequence[int]) -> None:
        self.ctx.extend(int(t) for t in tokens)

    def propose(self, max_len: int) -> Draft | None:
        conts, n = self.index.lookup(np.asarray(self.ctx[-16:], np.int32), length=min(max_len, self.max_len))
        if n == 0:
            return None
        tokens, _, _ = heaviest_path(conts, np.ones(len(conts)), min(max_len, self.max_len))
        if len(tokens) == 0:
            return None
        key = int(np.searchsorted(MATCH_BUCKETS, n, side="right"))
        return Draft(tokens=tokens, source="docs", acceptance=self.estimate.get(key), key=key)

    def update(self, feedback: Feedback) -> None:
        self.estimate.observe(feedback.draft.key, feedback.drafted, feedback.accepted)
