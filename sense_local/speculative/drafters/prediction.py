"""Predicted Outputs: the text a reply will mostly repeat (OpenAI's `prediction`, e.g. the file being
edited) as a draft source, followed from where the output has got to in it.

A cursor marks the prediction token the output should produce next. While the output follows the
prediction, the draft is the prediction from the cursor on. Where the output leaves it (an edit),
the cursor is lost until the output's last tokens are found in the prediction again: a 4-gram
anywhere (the nearest place at or after the cursor first, so repeated lines resume in order), or a
2- or 3-gram within RESYNC_WINDOW tokens after the cursor (an insertion that ends where the old
text resumes), or a single token within NEAR tokens of where the output left, right after it left.
What the output wrote between leaving and coming back is learned as a replacement of the prediction
tokens it skipped, and later drafts make it: after "maxc" became "high" once, every later "maxc" is
drafted as "high" (a rename edits every occurrence). While lost, the method's own drafter (if any)
proposes, so text the edit added can still be copied from the prompt.

OpenAI's usage fields come from the alignment: `accepted_prediction_tokens` are the prediction
tokens the output followed, `rejected_prediction_tokens` the rest of the prediction.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import CommittedKeys, Draft, Feedback, GenerationStats
from .base import AcceptanceEstimate, Drafter

RESYNC_N = 4  # tokens of output matched anywhere in the prediction to find the cursor again
RESYNC_WINDOW = 48  # shorter matches (2, 3 tokens) count only this close after the cursor
NEAR = 4  # and one token counts this close after where the output left, this soon after (`_near`)
MAX_SPAN = 3  # prediction tokens a learned replacement may stand for
SOURCE = "prediction"
# Acceptance is estimated per run bucket: how many tokens in a row the output has followed the
# prediction since it last left it (0-1, 2-3, 4-7, 8-15, 16-31, 32 and more), as prompt lookup does
# with its match length: a long run is a copy under way, a fresh one may be a chance match. The
# priors are where the estimates start; each generation's verifications move them, and the loop's
# cost curve sizes the draft from them.
RUN_BUCKETS = (2, 4, 8, 16, 32)
PRIORS = {b: p for b, p in enumerate((0.6, 0.7, 0.8, 0.9, 0.95, 0.99))}


def _one_pool(bucket: int) -> int:
    """Every run bucket's estimate is shrunk towards one pooled over all buckets: how far this
    reply keeps to its prediction is mostly the request's (a rename resumes at run 0 and is at
    once a long copy again), so after each edit the short-run buckets start from what the reply
    has shown, not from their priors."""
    return 0


class PredictionDrafter(Drafter):
    name = SOURCE

    def __init__(self, prediction: Sequence[int], fallback: Drafter | None = None):
        self.prediction = np.asarray(prediction, dtype=np.int32)  # [P]
        self.fallback = fallback
        self.needs_keys = fallback is not None and fallback.needs_keys
        self._grams: dict[tuple[int, ...], list[int]] = {}  # n-gram -> positions just after each occurrence
        pred = self.prediction.tolist()
        for n in range(2, RESYNC_N + 1):
            for end in range(n, len(pred) + 1):
                self._grams.setdefault(tuple(pred[end - n : end]), []).append(end)
        self.estimate = AcceptanceEstimate(PRIORS, pool=_one_pool)
        self._reset()

    def _reset(self) -> None:
        self.output: list[int] = []
        self.cursor = 0  # the prediction token the output should produce next
        self.synced = True  # the output is following the prediction at the cursor
        self.run = 0  # prediction tokens followed in a row since the output last left it
        self.pending: list[int] = []  # a learned replacement's tokens still to come before the cursor
        self.left_at: int | None = None  # the cursor when the output last left the prediction
        self.left_output = 0  # the output's length then (the departing token's index)
        self.replaced: dict[tuple[int, ...], tuple[int, ...]] = {}  # prediction span -> what the output wrote instead
        self.followed = np.zeros(len(self.prediction), dtype=bool)  # [P] prediction tokens the output produced

    def begin(self, prompt: Sequence[int]) -> None:
        self._reset()
        self.estimate.reset()
        if self.fallback is not None:
            self.fallback.begin(prompt)

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            t = int(t)
            self.output.append(t)
            if self.synced and self._follow(t):
                self.run += 1
                continue
            self.run = 0
            if self.synced:
                self.synced, self.pending = False, []
                self.left_at, self.left_output = self.cursor, len(self.output) - 1
            if not self._near(t):
                self._resync()
        if self.fallback is not None:
            self.fallback.extend(tokens)

    def add_keys(self, keys: CommittedKeys) -> None:
        if self.fallback is not None:
            self.fallback.add_keys(keys)

    def _follow(self, t: int) -> bool:
        """Does the output's next token `t` go on with the prediction (or a replacement learned
        earlier in this reply)? Moves the cursor if so."""
        if self.pending:
            if self.pending[0] != t:
                return False
            self.pending.pop(0)
            return True
        if self.cursor < len(self.prediction) and self.prediction[self.cursor] == t:
            self.followed[self.cursor] = True
            self.cursor += 1
            return True
        for span, instead in self._replacements_at(self.cursor):
            if instead[0] == t:
                self.cursor += len(span)
                self.pending = list(instead[1:])
                return True
        return False

    def _replacements_at(self, i: int):
        for n in range(MAX_SPAN, 0, -1):
            span = tuple(self.prediction[i : i + n].tolist())
            if len(span) == n and span in self.replaced:
                yield span, self.replaced[span]

    def _near(self, token: int) -> bool:
        """Soon after the output left the prediction, one token found within NEAR tokens of where
        it left is enough to follow again, and what the output wrote in between is learned as a
        replacement: a name replaced by another ("maxc" -> "high") is followed from the next token
        on, and its later occurrences are drafted replaced."""
        if self.left_at is None or len(self.output) - 1 - self.left_output > NEAR:
            return False
        window = self.prediction[self.left_at : self.left_at + NEAR + 1]
        hit = np.flatnonzero(window == token)
        if len(hit) == 0:
            return False
        at = self.left_at + int(hit[0])
        span = tuple(self.prediction[self.left_at : at].tolist())
        instead = tuple(self.output[self.left_output : -1])
        if 0 < len(span) <= MAX_SPAN and 0 < len(instead) <= NEAR:
            self.replaced[span] = instead
        self.followed[at] = True
        self.cursor, self.synced, self.left_at, self.run = at + 1, True, None, 1
        return True

    def _resync(self) -> None:
        """Find the cursor again from the output's last tokens (see the module's note)."""
        out = self.output
        for n in range(min(RESYNC_N, len(out)), 1, -1):
            places = self._grams.get(tuple(out[-n:]))
            if not places:
                continue
            ahead = [p for p in places if p >= self.cursor]
            if n < RESYNC_N:
                ahead = [p for p in ahead if p - n <= self.cursor + RESYNC_WINDOW]
                if not ahead:
                    continue
            at = ahead[0] if ahead else places[-1]
            since = min(n, len(out) - self.left_output)  # tokens written since it left: counted once
            self.followed[at - since : at] = True
            self.cursor, self.synced, self.left_at, self.run = at, True, None, n
            return

    def propose(self, max_len: int) -> Draft | None:
        if self.synced and (self.pending or self.cursor < len(self.prediction)):
            key = int(np.searchsorted(RUN_BUCKETS, self.run, side="right"))
            tokens = np.asarray(self._ahead(max_len), dtype=np.int32)
            return Draft(tokens=tokens, source=SOURCE, acceptance=self.estimate.get(key), key=key)
        return self.fallback.propose(max_len) if self.fallback is not None else None

    def _ahead(self, max_len: int) -> list[int]:
        """The prediction from the cursor, with the replacements learned so far made."""
        out, i = list(self.pending[:max_len]), self.cursor
        while len(out) < max_len and i < len(self.prediction):
            for span, instead in self._replacements_at(i):
                out.extend(instead)
                i += len(span)
                break
            else:
                out.append(int(self.prediction[i]))
                i += 1
        return out[:max_len]

    def update(self, feedback: Feedback) -> None:
        if feedback.draft.source != SOURCE:
            if self.fallback is not None:
                self.fallback.update(feedback)
            return
        self.estimate.observe(feedback.draft.key, feedback.drafted, feedback.accepted)

    def report(self, stats: GenerationStats) -> None:
        accepted = int(self.followed.sum())
        stats.prediction_accepted = accepted
        stats.prediction_rejected = len(self.prediction) - accepted
