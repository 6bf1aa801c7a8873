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
# Prior per (n-gram length, previous draft fully accepted): longer matches and an ongoing copy
# are likelier to continue. Observed acceptance takes over after a few steps.
PRIORS = {(n, streak): min(0.95, 0.35 + 0.15 * (n - 1) + (0.1 if streak else 0.0))
          for n in range(1, MAX_N + 1) for streak in (False, True)}


class PromptLookupDrafter(Drafter):
    name = "pld"

    def __init__(self, max_n: int = MAX_N):
        self.max_n = max_n
        self.context: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest continuation
        self._streak = False
        self.estimate = AcceptanceEstimate(PRIORS)

    def begin(self, prompt: Sequence[int]) -> None:
        self.context = []
        self._index = {}
        self._streak = False
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
            key = (n, self._streak)
            return Draft(tokens=tokens, source=self.name, acceptance=self.estimate.get(key), key=key)
        return None

    def update(self, feedback: Feedback) -> None:
        drafted = len(feedback.draft.tokens)
        self.estimate.observe(feedback.draft.key, drafted, feedback.accepted)
        self._streak = feedback.accepted == drafted
