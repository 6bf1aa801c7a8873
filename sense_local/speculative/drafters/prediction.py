"""Predicted Outputs: the text a reply will mostly repeat (OpenAI's `prediction`, e.g. the file being
edited) as a draft source, followed from where the output has got to in it.

A cursor marks the prediction token the output should produce next. While the output follows the
prediction, the draft is the prediction from the cursor on. Where the output leaves it (an edit),
the cursor is lost until the output's last tokens are found in the prediction again: a 4-gram
anywhere (the nearest place at or after the cursor first, so repeated lines resume in order), or a
2- or 3-gram with a word in it within RESYNC_WINDOW tokens after the cursor (an insertion that ends where the old
text resumes), or a single token within a few tokens of where the output left, right after it left
(follower.py, which prompt lookup shares). What the output wrote between leaving and coming back
is learned as a replacement of the prediction tokens it skipped, and later drafts make it: after
"maxc" became "high" once, every later "maxc" is drafted as "high" (a rename edits every
occurrence). While lost, the method's own drafter (if any) proposes, so text the edit added can
still be copied from the prompt.

Not every draft token is as sure as the copy around it: where a draft makes a learned rename, keeps
a word the reply renamed elsewhere, or meets a word the request names for the first time, the reply
may choose otherwise. Those tokens carry their own estimates, learned from the reply
(rename_habits.py, mentions.py), and the draft's path probabilities let the loop stop it just
before one where drafting through does not pay (CostCurve.best_chain_size).

OpenAI's usage fields come from the alignment: `accepted_prediction_tokens` are the prediction
tokens the output followed, `rejected_prediction_tokens` the rest of the prediction.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import CommittedKeys, Draft, Feedback, GenerationStats, RowCandidates
from .base import AcceptanceEstimate, Drafter
from .follower import Follower
from .mentions import Mentions, word_starts
from .prose import prose_tokens
from .rename_habits import RenameHabits
from .renames import WordRenames

RESYNC_N = 4  # tokens of output matched anywhere in the prediction to find the cursor again
RESYNC_WINDOW = 48  # shorter matches (2, 3 tokens) count only this close after the cursor,
# and only where a token of the match has a letter or digit: a reply that talks about a pasted block
# writes ":\n\n" before its own code, and the blank line in the block 20 tokens on was followed (the
# 135M's chat-1: a 15-token draft kept none)
SOURCE = "prediction"
# Acceptance is estimated per run bucket: how many tokens in a row the output has followed the
# prediction since it last left it (0-1, 2-3, 4-7, 8-15, 16-31, 32 and more), as prompt lookup does
# with its match length: a long run is a copy under way, a fresh one may be a chance match. The
# priors are where the estimates start; each generation's verifications move them, and the loop's
# cost curve sizes the draft from them. Unlike prompt lookup's chance matches, a prediction is what
# the client says the reply will mostly repeat, so a run is believed from its first token: first
# 0.9 up to 15 tokens (on the prior curve a first draft of 15 tokens, where 0.6 drafted 2). Replayed on three
# recordings of predicted_edits.py's ten edits (benchmarks/replay_predicted.py), from 0.6 / 0.7 / 0.8
# for runs of 0-1 / 2-3 / 4-7: `ar` + prediction 2.128x -> 2.259x, 2.386x -> 2.589x, 2.633x -> 2.793x
# `ar` on this EPYC's curves, 3.055x -> 3.148x and 3.660x -> 3.799x on the Intel VM's (0.85: 2.196x,
# 2.452x; 0.95: as 0.9); with another edit's file as the prediction 0.996x -> 0.988x (the reply's
# first draft is wasted, then the pooled estimate falls). With the doubtful tokens modeled (below),
# 0.99 from the first token: a reply's first draft is 63 tokens, not 15 (an edit in the first line
# is usually a word the request names, and the draft stops before it). Replayed: 3.232x -> 3.332x
# (shlex 4.29x -> 4.73x, heapq 2.45x -> 2.74x, string 1.22x -> 1.34x, no edit lower), the Intel
# VM's curve 3.759x -> 3.766x; another edit's file as the prediction 0.983x -> 0.954x (its first
# draft of 63 wasted). After a review's mends (a rename's doubt put on its first token unlike the
# file's, a doubt's outcome learned where a draft stopped just before it, a draft the usual chain
# keeps short of a doubt sized as that chain): 3.280x (calendar 2.96x -> 2.73x: a 63-token draft now
# meets the reply's own `month` -> `mon`), Intel 3.772x, another file as the prediction 0.957x:
# 0.987x again with NOT_HELD_PRIORS below (the edits' own predictions are held: 3.280x unchanged).
RUN_BUCKETS = (2, 4, 8, 16, 32)
PRIORS = {b: p for b, p in enumerate((0.99, 0.99, 0.99, 0.99, 0.99, 0.99))}
# A prediction the prompt does not hold (under HELD of its RESYNC_N-grams there) is not the file
# the request pastes and edits: its runs start where they started before, a first draft of 15.
HELD = 0.5
NOT_HELD_PRIORS = {b: p for b, p in enumerate((0.9, 0.9, 0.9, 0.9, 0.95, 0.99))}
# A draft's tokens are not all as sure. Where it makes a learned rename, or keeps a word it has
# learned a rename of, the reply may choose otherwise (rename_habits.py); where the request names
# a word, its first occurrence may be the edit (mentions.py). Such doubtful tokens have their own
# estimates, learned from this reply, and the draft's path probabilities (the running product of its
# tokens' estimates) size it on the cost curve (CostCurve.best_chain_size): it runs long through
# plain copy and stops before a doubtful token unless drafting through it pays. Replayed on a
# recording of the ten edits on this EPYC's curve (benchmarks/replay_predicted.py), `ar` + prediction
# over `ar`: 2.829x before; 3.024x with the renames of numbered and snake_case words (renames.py) and
# of a word edited inside (follower.py) and the habits kept per kind; 3.154x with the request's
# words; 3.232x with the habits kept per word (bisect 2.49x -> 3.64x, calendar 1.73x -> 2.96x,
# fnmatch 3.09x -> 4.27x); on the Intel VM's curve 3.513x -> 3.759x. With another edit's file as
# the prediction 0.987x -> 0.983x.
NAMED = "named"  # the first code occurrence of a word the request names (mentions.py)
NAMED_PRIOR = 0.5  # P(the reply edits it there)
NAMED_WEIGHT = 2.0


def _one_pool(bucket: int) -> int:
    """Every run bucket's estimate is shrunk towards one pooled over all buckets: how far this
    reply keeps to its prediction is mostly the request's (a rename resumes at run 0 and is at
    once a long copy again), so after each edit the short-run buckets start from what the reply
    has shown, not from their priors."""
    return 0


class PredictionDrafter(Drafter):
    name = SOURCE

    def __init__(self, prediction: Sequence[int], fallback: Drafter | None = None, vocab=None,
                 believed: bool = True):
        """`vocab`: the target's vocabulary (piece, tokenize), for renames learned as words
        (renames.py); None: replacements are learned token by token only. `believed`: a client's
        prediction, believed from the first token where the prompt holds it; False: an implicit
        one (pasted_code.py), whose runs start as a prediction the prompt does not hold."""
        self.believed = believed
        self.prediction = np.asarray(prediction, dtype=np.int32)  # [P]
        self.fallback = fallback
        self.vocab = vocab
        self.needs_keys = fallback is not None and fallback.needs_keys
        self.candidates = fallback.candidates if fallback is not None else 0
        self.candidate_rate = fallback.candidate_rate if fallback is not None else 0.0
        self._grams: dict[tuple[int, ...], list[int]] = {}  # n-gram -> positions just after each occurrence
        pred = self.prediction.tolist()
        for n in range(2, RESYNC_N + 1):
            for end in range(n, len(pred) + 1):
                self._grams.setdefault(tuple(pred[end - n : end]), []).append(end)
        self.estimate = AcceptanceEstimate(PRIORS, pool=_one_pool)
        self.habits = RenameHabits()
        pieces = [vocab.piece(t) for t in pred] if vocab is not None else None
        self.wordy = (np.array([any(c.isalnum() for c in p.decode("utf-8", "ignore")) for p in pieces], dtype=bool)
                      if pieces is not None else np.ones(len(pred), dtype=bool))  # [P] tokens with a letter or digit
        self.prose = prose_tokens(pieces) if pieces is not None else np.zeros(len(pred), dtype=bool)  # [P] in comments, strings
        self.words = word_starts(pieces) if pieces is not None else [None] * len(pred)  # [P] the identifier starting in each
        self.mentions = Mentions(pieces, self.words, self.prose) if pieces is not None else None  # words the request names
        self.named_estimate = AcceptanceEstimate({NAMED: NAMED_PRIOR}, weight=NAMED_WEIGHT)
        self._reset()

    def _reset(self) -> None:
        self.output: list[int] = []
        renames = WordRenames(self.vocab) if self.vocab is not None else None
        self.follower = Follower(self.prediction, renames=renames)  # the cursor in the prediction, its learned replacements
        self.follower.place(0)
        self.follower.declined = self._declines
        self.followed = np.zeros(len(self.prediction), dtype=bool)  # [P] prediction tokens the output produced
        self._passed = 0  # prediction tokens before this one the output has gone past

    @property
    def cursor(self) -> int | None:
        return self.follower.cursor

    @property
    def replaced(self) -> dict:
        return self.follower.replaced

    @property
    def run(self) -> int:
        """Prediction tokens followed in a row since the output last left it."""
        return self.follower.run

    def begin(self, prompt: Sequence[int]) -> None:
        self._reset()
        if self.mentions is not None:
            self.mentions.begin([self.vocab.piece(int(t)) for t in prompt])
        believed = self.believed and self._held_in(prompt)
        # an implicit prediction (a pasted block) estimates its runs' first tokens apart, as prompt
        # lookup does its matches': a reply that talks about the block meets its 4-grams by chance,
        # and first tokens that hit had raised the run's estimate (the 135M's chat-1, a follow-up on
        # an answer's code: five drafts of 7-15 tokens kept 1). Replayed (replay_bench --methods
        # pld,sense): the 135M's chat 0.97x -> 0.99x (pld) and 0.96x -> 0.98x (sense) on the live run's
        # texts, 1.00x -> 1.01x on its recording, code 1.92x -> 1.95x; the 1.5B's code 2.98x -> 2.97x,
        # chat 1.04x -> 1.03x (chat-1 1.12x -> 1.11x: its copies of the block start a little later)
        self.estimate = AcceptanceEstimate(PRIORS if believed else NOT_HELD_PRIORS, pool=_one_pool,
                                           split_first=not self.believed)
        self.habits.reset()
        self.named_estimate.reset()
        if self.fallback is not None:
            self.fallback.begin(prompt)

    def extend(self, tokens: Sequence[int]) -> None:
        f = self.follower
        for t in tokens:
            t = int(t)
            self.output.append(t)
            if f.step(t, self.output):
                if f.followed_at is not None:
                    self.followed[f.followed_at] = True
                continue
            self._resync()
        if self.mentions is not None and f.cursor is not None:
            for i in range(self._passed, f.cursor):
                self.mentions.passed(i)
            self._passed = max(self._passed, f.cursor)
        if self.fallback is not None:
            self.fallback.extend(tokens)

    def cheap_verification(self, cheap: bool) -> None:
        if self.fallback is not None:
            self.fallback.cheap_verification(cheap)

    def add_keys(self, keys: CommittedKeys) -> None:
        if self.fallback is not None:
            self.fallback.add_keys(keys)

    def add_candidates(self, candidates: RowCandidates) -> None:
        if self.fallback is not None:
            self.fallback.add_candidates(candidates)

    def _resync(self) -> None:
        """Find the cursor again from the output's last tokens (see the module's note)."""
        out, f = self.output, self.follower
        cursor = f.cursor  # where the output left the prediction (the cursor stays there while lost)
        for n in range(min(RESYNC_N, len(out)), 1, -1):
            places = self._grams.get(tuple(out[-n:]))
            if not places:
                continue
            ahead = [p for p in places if p >= cursor]
            if n < RESYNC_N:  # near, and not blank lines and punctuation alone
                ahead = [p for p in ahead if p - n <= cursor + RESYNC_WINDOW and self.wordy[p - n : p].any()]
                if not ahead:
                    continue
            at = ahead[0] if ahead else places[-1]
            since = min(n, len(out) - f.left_output)  # tokens written since it left: counted once
            self.followed[at - since : at] = True
            f.place(at, run=n)
            return

    def propose(self, max_len: int) -> Draft | None:
        f = self.follower
        if f.synced and (f.pending or f.cursor < len(self.prediction)):
            key = int(np.searchsorted(RUN_BUCKETS, self.run, side="right"))
            tokens = np.asarray(f.ahead(max_len), dtype=np.int32)
            acceptance = self.estimate.get(key)
            doubts = self._doubts(tokens)
            probs = np.full(len(tokens), acceptance)  # [k] each token's chance, the one before it accepted
            probs[:1] = self.estimate.first(key)  # the run's first token (its own estimate where split)
            for at, made, word, kind, _ in doubts:
                probs[at] = self._chance(made, word, kind, acceptance)
            # a doubt lowers the chain; a split first token moves its head (a client's prediction: never)
            differs = bool((probs < acceptance).any()) or (self.estimate.first_tokens is not None and probs[0] != acceptance)
            # geometric: its head the usual first token (no doubt on it: `doubts` ascend), lowered only after
            geometric = differs and not (doubts and doubts[0][0] == 0) and bool((probs[1:] <= acceptance).all())
            return Draft(tokens=tokens, source=SOURCE, acceptance=acceptance, key=(key, doubts),
                         path_probs=np.cumprod(probs) if differs else None, geometric=geometric)
        return self.fallback.propose(max_len) if self.fallback is not None else None

    def _doubts(self, tokens: np.ndarray) -> tuple[tuple[int, bool, bytes | None, str, int], ...]:
        """The draft's tokens where the reply may choose otherwise: (index, whether the draft makes
        an edit there, the word, its kind: code / prose / NAMED, the draft's token), one per index:
        where it makes a learned rename or keeps a word it has one for (at the first token told
        apart from the other choice), and the first occurrence of each word the request names."""
        f, marks = self.follower, {}
        for made, places in ((True, f.replaced_in_ahead), (False, f.declined_in_ahead)):
            for at, i in places:
                marks.setdefault(at, (made, self.words[i], self._kind(i)))
        for at in self._first_named(f.ahead_positions):
            marks.setdefault(at, (False, None, NAMED))
        return tuple((at, made, word, kind, int(tokens[at])) for at, (made, word, kind) in sorted(marks.items())
                     if at < len(tokens))

    def _chance(self, made: bool, word: bytes | None, kind: str, acceptance: float) -> float:
        """P(the reply writes the draft's token at a doubt)."""
        if kind == NAMED:
            return 1.0 - self.named_estimate.get(NAMED)
        p, sure = self.habits.chance(word, kind)
        return acceptance if sure else (p if made else 1.0 - p)

    def _learn(self, word: bytes | None, kind: str, edited: bool) -> None:
        """What the reply did at a doubt."""
        if kind == NAMED:
            self.named_estimate.observe(NAMED, 1, int(edited))
        else:
            self.habits.observe(word, kind, edited)

    def update(self, feedback: Feedback) -> None:
        if feedback.draft.source != SOURCE:
            if self.fallback is not None:
                self.fallback.update(feedback)
            return
        bucket, doubts = feedback.draft.key
        n, failed = feedback.accepted, feedback.accepted < feedback.drafted
        doubtful, failed_at_doubt = 0, False  # doubts verified, and whether the draft failed at one
        for at, made, word, kind, token in doubts:
            if at < n or (failed and at == n):
                self._learn(word, kind, edited=made == (at < n))  # a made edit accepted, or a kept word rejected
                doubtful += at < n
                failed_at_doubt |= at == n
            elif at == n and feedback.next_token >= 0:  # the draft stopped just before it: the next token decides
                self._learn(word, kind, edited=(feedback.next_token == token) == made)
            # (a shadow's doubt just past its one token comes again at the next draft's start)
        plain_ok = n - doubtful
        self.estimate.observe(bucket, plain_ok + (failed and not failed_at_doubt), plain_ok)

    def _held_in(self, prompt: Sequence[int]) -> bool:
        """Whether the prompt holds the prediction: HELD of its RESYNC_N-grams occur there (the file
        a request pastes and asks to edit, however its edges tokenize in the prompt)."""
        n = RESYNC_N
        grams = {tuple(prompt[i : i + n]) for i in range(len(prompt) - n + 1)}
        pred = self.prediction.tolist()
        total = len(pred) - n + 1
        return total <= 0 or sum(tuple(pred[i : i + n]) in grams for i in range(total)) >= HELD * total

    def _first_named(self, positions: list[int]) -> tuple[int, ...]:
        """Indices into a draft (its tokens' prediction positions) of the first occurrence of each
        named word the reply has not yet passed."""
        if self.mentions is None:
            return ()
        seen, out = set(), []
        for at, i in enumerate(positions):
            word = self.mentions.doubtful(i) if i >= 0 else None
            if word is not None and word not in seen:
                seen.add(word)
                out.append(at)
        return tuple(out)

    def _kind(self, i: int) -> str:
        return "prose" if self.prose[i] else "code"

    def _declines(self, i: int) -> bool:
        """Whether a draft keeps the prediction's word at i rather than make a learned rename: where
        this reply has mostly kept this word, or words of its kind (prose or code), it met before."""
        return self.habits.chance(self.words[i], self._kind(i))[0] < 0.5

    def report(self, stats: GenerationStats) -> None:
        accepted = int(self.followed.sum())
        stats.prediction_accepted = accepted
        stats.prediction_rejected = len(self.prediction) - accepted
