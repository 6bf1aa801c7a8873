"""Whether a reply makes the renames it has taught a Predicted Outputs drafter, where it meets them.

A rename learned once (renames.py) is made at every later occurrence of the word, but a reply may
not make it everywhere: bisect's edit ("rename the parameters lo and hi to low and high", the 1.5B)
renamed `lo` in the code and kept it in all four docstring mentions; calendar's ("rename year to
yr") renamed `y1` to `yr1` in its docstring too but kept "for year, month" there in English. What
the reply does with a word in code or in prose (comments and strings, prose.py) it does again with
that word there, so once it has shown it the choice is as sure as the copy around it; a word it has
not yet met in a kind takes the kind's estimate, learned from the reply's other words (from the
priors below), and a draft keeps the prediction's word where that is under one half.
"""
from __future__ import annotations

from .base import AcceptanceEstimate

KINDS = ("code", "prose")
PRIORS = {"code": 0.95, "prose": 0.7}  # P(the reply makes a learned rename at a word it has not met there)
WEIGHT = 2.0  # a reply shows its habit in a kind in one or two words


class RenameHabits:
    def __init__(self):
        self.kinds = AcceptanceEstimate(PRIORS, weight=WEIGHT)
        self.shown: dict[tuple[bytes | None, str], list[int]] = {}  # (word, kind) -> [times made, times kept]

    def reset(self) -> None:
        self.kinds.reset()
        self.shown.clear()

    def chance(self, word: bytes | None, kind: str) -> tuple[float, bool]:
        """(P(the reply makes the rename at `word` in `kind`), whether it has always chosen the
        same there: then the choice is as sure as the copy)."""
        made, kept = self.shown.get((word, kind), (0, 0)) if word is not None else (0, 0)
        if made + kept == 0:
            return self.kinds.get(kind), False
        return made / (made + kept), made == 0 or kept == 0

    def observe(self, word: bytes | None, kind: str, made: bool) -> None:
        self.kinds.observe(kind, 1, int(made))
        if word is not None:
            self.shown.setdefault((word, kind), [0, 0])[0 if made else 1] += 1
