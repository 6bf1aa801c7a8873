"""REST baseline: lexical retrieval over the document store's tokens.

The longest suffix of the context (16 down to 2 tokens) is matched exactly in the document token
stream; the continuations of the matches are merged into a trie and its most frequent path is the
draft. It exists to show what navigating by key states adds over surface matching. Its drafts'
source is "rest" (SENSE's from the same documents: "docs").
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


SOURCE = "rest"


def new_estimate() -> AcceptanceEstimate:
    return AcceptanceEstimate(PRIORS)


class RestDrafter(Drafter):
    name = SOURCE

    def __init__(self, store, max_len: int = 16, *, index: NgramIndex | None = None, source: str = SOURCE,
                 estimate: AcceptanceEstimate | None = None):
        """`index`: the store's n-gram index (the speculator keeps one per store), else built here; or
        anything with NgramIndex's `lookup` (the reply history's). `source`: what its drafts are
        counted as. `estimate`: acceptance learned before (lent by the speculator), else a new one."""
        self.index = index if index is not None else NgramIndex.of_store(store)
        self.name = self.source = source
        self.max_len = max_len
        self.ctx: list[int] = []
        self.estimate = estimate if estimate is not None else new_estimate()

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
        return Draft(tokens=tokens, source=self.source, acceptance=self.estimate.get(key), key=key)

    def update(self, feedback: Feedback) -> None:
        self.estimate.observe(feedback.draft.key, feedback.drafted, feedback.accepted)
