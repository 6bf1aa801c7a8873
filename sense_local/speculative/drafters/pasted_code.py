"""A code block pasted in the prompt, drafted from as Predicted Outputs drafts from a prediction.

"Rename x to y in this code: ```...```" is Predicted Outputs without the field: the reply will
mostly repeat the block, with edits. Prompt lookup (pld.py) copies it too, but from wherever its
n-grams match, without the prediction drafter's renames, rename habits and doubts (prediction.py).
So for every drafting method the prompt's last fenced code block (in its last TAIL_TOKENS tokens:
the latest request's) is an implicit prediction, and the method's own drafter drafts where the
output leaves it (first `pld` only: on the Intel VM's quick suite `sense` then ran 0.62x-0.72x
`pld` on three of the four code edits, its own copies being prompt lookup's without the block).
Unlike a prediction a client sends, it is not believed from the first token (a block may be there
to be explained): its runs start as a prediction the prompt does not hold (a first draft of 15),
and it counts in no usage field. Replayed on the quick suite's four code edits (the 1.5B's recorded
`ar` replies, this EPYC's curve): `pld` 2.351x -> 2.916x `ar` (shlex.quote 2.77x -> 3.81x,
difflib 2.57x -> 3.63x, fnmatch 1.55x -> 1.85x, textwrap 2.76x -> 2.82x); believed from the first
token, 2.87x (textwrap 2.43x).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from ..types import CommittedKeys, Draft, Feedback, GenerationStats, RowCandidates
from .base import Drafter
from .prediction import PredictionDrafter

FENCE = re.compile(r"```[\w+.#-]*[ \t]*\n(.*?)```", re.S)  # a fenced block: (its body)
TAIL_TOKENS = 4096
MIN_LINES = 3  # a block shorter than this is a snippet, not a file to rewrite


def last_code_block(vocab, prompt: Sequence[int]) -> str | None:
    """The prompt's last fenced code block, fences included (None: none of MIN_LINES lines)."""
    text = vocab.detokenize(prompt[-TAIL_TOKENS:])
    blocks = list(FENCE.finditer(text))
    if not blocks or blocks[-1].group(1).count("\n") < MIN_LINES:
        return None
    return blocks[-1].group(0)


class PastedCode(Drafter):
    """A method's drafter (`inner`), with the prompt's last code block as an implicit prediction."""

    def __init__(self, inner: Drafter, vocab):
        self.inner, self.vocab = inner, vocab
        self.name = inner.name
        self.needs_keys, self.candidates, self.candidate_rate = inner.needs_keys, inner.candidates, inner.candidate_rate
        self.active: Drafter = inner  # the reply's drafter: inner, or a PredictionDrafter over the block

    def begin(self, prompt: Sequence[int]) -> None:
        block = last_code_block(self.vocab, prompt)
        self.active = self.inner if block is None else PredictionDrafter(
            self.vocab.tokenize(block, add_special=False), fallback=self.inner, vocab=self.vocab, believed=False)
        self.active.begin(prompt)

    def cheap_verification(self, cheap: bool) -> None:
        self.inner.cheap_verification(cheap)

    def extend(self, tokens: Sequence[int]) -> None:
        self.active.extend(tokens)

    def propose(self, max_len: int) -> Draft | None:
        return self.active.propose(max_len)

    def update(self, feedback: Feedback) -> None:
        self.active.update(feedback)

    def add_keys(self, keys: CommittedKeys) -> None:
        self.active.add_keys(keys)

    def add_candidates(self, candidates: RowCandidates) -> None:
        self.active.add_candidates(candidates)

    def report(self, stats: GenerationStats) -> None:
        self.inner.report(stats)  # no prediction was sent: its usage fields stay 0
