"""OpenAI's presence and frequency penalties, kept exact under speculative verification.

A token's logit is lowered by `presence` once it has appeared in the reply and by `frequency` for
each time it has (OpenAI's definition; vLLM's too: the reply's own tokens, not the prompt's). Under
speculation a verified draft is judged row by row as sequential decoding would have judged it, so
row i of a verification decode counts the reply so far plus the draft's first i tokens. Drafts are
chains while penalties are on (loop.py), as under sampling and grammars.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import SenseError

LIMIT = 2.0  # OpenAI's range for both: -2 to 2


@dataclass(frozen=True)
class Penalties:
    presence: float = 0.0
    frequency: float = 0.0

    def __post_init__(self):
        for name, value in (("presence_penalty", self.presence), ("frequency_penalty", self.frequency)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -LIMIT <= value <= LIMIT:
                raise SenseError(f"{name} must be a number from -{LIMIT:g} to {LIMIT:g} (got {value!r})")

    @property
    def active(self) -> bool:
        return self.presence != 0.0 or self.frequency != 0.0

    def start(self) -> "PenaltyState":
        return PenaltyState(self)


class PenaltyState:
    """The reply's token counts, and rows penalized by them."""

    def __init__(self, penalties: Penalties):
        self.penalties = penalties
        self.counts: Counter[int] = Counter()

    def accept(self, token: int) -> None:
        """An emitted token."""
        self.counts[token] += 1

    def apply(self, logits: np.ndarray, draft: np.ndarray) -> np.ndarray:
        """logits [k+1, V] of a decode of [last + draft [k]] -> a penalized copy: row i as the token
        after the reply and draft[:i] would have been judged."""
        out = np.array(logits, dtype=np.float32)  # a copy: the engine's rows stay the model's own
        counts = Counter(self.counts)
        for i in range(len(out)):
            if counts:
                ids = np.fromiter(counts.keys(), np.int64, len(counts))
                times = np.fromiter(counts.values(), np.float32, len(counts))
                out[i, ids] -= self.penalties.presence + self.penalties.frequency * times
            if i < len(draft):
                counts[int(draft[i])] += 1
        return out
