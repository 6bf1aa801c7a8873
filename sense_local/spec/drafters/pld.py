"""Prompt lookup (PLD): match the last n-gram (n = 4 down to 1) earlier in prompt + generated text
and propose the tokens that followed its most recent occurrence.

The n-gram index is updated incrementally (O(max_n) per committed token), so a proposal never scans
the context.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import Draft, Feedback
from .base import AcceptanceEstimate, Drafter

MAX_N = 4
RUN_BUCKETS = (1, 4, 12)  # accepted draft tokens in a row: 0 | 1-3 | 4-11 | 12+
# Prior per (n-gram length, run bucket), from acceptance measured on the quick suite (SmolLM2):
# open chat ~0.2 / 0.4 / 0.5 / 0.6 for n = 1..4; a copy under way (a long run) is likelier to go on.
# Observed acceptance takes over after a few steps; shadow scoring keeps it fresh when not drafting.
PRIORS = {(n, b): min(0.95, {1: 0.2, 2: 0.35, 3: 0.5, 4: 0.6}[n] + (0.0, 0.1, 0.2, 0.25)[b])
          for n in range(1, MAX_N + 1) for b in range(len(RUN_BUCKETS) + 1)}


class PromptLookupDrafter(Drafter):
    name = "pld"

    def __init__(self, max_n: int = MAX_N):
        self.max_n = max_n
        self.context: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest continuation
        self._run = 0  # draft tokens accepted in a row (a copy under way)
        self.estimate = AcceptanceEstimate(PRIORS)

    def begin(self, prompt: Sequence[int]) -> None:
        self.context = []
        self._index = {}
        self._run = 0
        self.extend(prompt)

    def extend(self, tokens: Sequence[int]) -> None:
        ctx = self.context
        for t in tokens:
            p = len(ctx)  # the new token's position: every n-gram ending at p-1 now has a continuation
            for n in range(1, self.max_n + 1):
                if p - n < 0:
                    break
                self._index[tuple(ctx[p - n : p])] = p
            ctx.append(int(t))

    def propose(self, max_len: int) -> Draft | None:
        ctx = self.context
        for n in range(min(self.max_n, len(ctx)), 0, -1):
            start = self._index.get(tuple(ctx[-n:]))
            if start is None:
                continue
            tokens = np.asarray(ctx[start : start + max_len], dtype=np.int32)
            if len(tokens) == 0:
                continue
            key = (n, int(np.searchsorted(RUN_BUCKETS, self._run, side="right")))
            return Draft(tokens=tokens, source=self.name, acceptance=self.estimate.get(key), key=key)
        return None

    def update(self, feedback: Feedback) -> None:
        drafted = len(feedback.draft.tokens)
        self.estimate.observe(feedback.draft.key, drafted, feedback.accepted)
        self._run = self._run + feedback.accepted if feedback.accepted == drafted else 0
