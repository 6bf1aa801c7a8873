"""REST baseline: lexical retrieval over the document store's tokens.

The longest suffix of the context (16 down to 2 tokens) is matched exactly in the document token
stream; the continuations of the matches are merged into a trie and its most voted path is the
draft (a newer match's vote weighs more), each token's estimate scaled by its share of the vote.
It exists to show what navigating by key states adds over surface matching. Its drafts' source is
"rest" (SENSE's from the same documents: "docs").

SENSE drafts from the reply history's tokens with it too (`history-ngram`, down to 1-token
matches there: reply_history.py). Replayed on the 1.5B's returning user (benchmarks/
replay_returning_user.py, this Intel VM's curve): `sense` 1.288x -> 1.309x modeled with the vote
shares, 1.316x with 1-token matches too, 1.324x with newer matches weighing more (1.312x with that
but no 1-token matches).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...datastore.ngram_index import NgramIndex
from ..types import Draft, Feedback
from .base import AcceptanceEstimate, Drafter
from .trie import heaviest_path

MATCH_BUCKETS = (2, 3, 4, 8, 12)  # matched suffix length: 1 (the reply history's) | 2 | 3 | 4-7 | 8-11 | 12+
PRIORS = {b: (0.15, 0.3, 0.4, 0.55, 0.7, 0.8)[b] for b in range(len(MATCH_BUCKETS) + 1)}
RECENCY = 0.9  # a match's vote, per newer match after it: the latest occurrences say most of what comes next


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
        votes = RECENCY ** np.arange(len(conts))[::-1]  # [m] continuations oldest first (lookup's order)
        tokens, shares, _ = heaviest_path(conts, votes, min(max_len, self.max_len))
        if len(tokens) == 0:
            return None
        key = int(np.searchsorted(MATCH_BUCKETS, n, side="right"))
        a = self.estimate.get(key)
        # a token the matches disagree on is less sure: each one's vote share scales its estimate
        return Draft(tokens=tokens, source=self.source, acceptance=a, key=key,
                     path_probs=np.cumprod(a * shares.astype(np.float64)))

    def update(self, feedback: Feedback) -> None:
        self.estimate.observe(feedback.draft.key, feedback.drafted, feedback.accepted)
