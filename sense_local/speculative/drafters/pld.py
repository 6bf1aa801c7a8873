"""Prompt lookup (PLD): match the last n-gram (n = 4 down to 1) earlier in prompt + generated text
and propose the tokens that followed its most recent occurrence.

The n-gram index is updated incrementally (O(max_n) per committed token), so a proposal never scans
the context.

Documents pasted into a prompt are often hard-wrapped ("It\nis useful"), while a model quoting
them writes "It is useful": the newline token breaks every draft at each wrap. With `rewrap`, the
lookup context also holds the prompt re-tokenized with its line wraps joined (`rewrap.py`), so a
quote finds the joined form and the draft runs through the wrap; where the raw prompt matches
strictly further back (code, whose newlines the model keeps), the raw place is followed instead.

A copy is followed through its edits (follower.py): the place the lookup found is a cursor the
output moves along, and where the output leaves it and comes back a few tokens later (" names"
written as " items"), what it wrote instead is learned and later drafts make it, so a renamed
parameter costs one miss, not one per occurrence. Replayed on the 1.5B's recorded outputs with its
cost curve (benchmarks/replay_bench.py), the full suite's code edits went from 1.46x to 1.53x
modeled (tau 4.16 -> 4.66), grounded 1.37x -> 1.38x.

A loop (a small model's greedy "la noche de la noche de ...") is drafted on past the context's end,
the draft copying its own tokens (follower.ahead's overlap) where the match reaches back past the
place it continues from: before, every draft ended with the context, one period long. Replayed on
the 135M's quick-suite recording: translate 1.09x -> 1.27x, summary 1.22x -> 1.27x, code 1.94x ->
1.99x; the 1.5B's recording the same.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import numpy as np

from ..types import Draft, Feedback
from .base import AcceptanceEstimate, Drafter
from .follower import Follower

MAX_N = 4
MAX_MATCH = 32  # how far back a match is followed to tell a verbatim copy from a chance n-gram
CANDIDATES = 8  # earlier places of the same 4-gram compared by how far back they match
MATCH_BUCKETS = (2, 3, 4, 8, 16, 32)  # tokens in a row matching: 1 | 2 | 3 | 4-7 | 8-15 | 16-31 | 32
# Prior per match bucket: first-token acceptance measured on the quick suite's grounded, code and
# open tasks (SmolLM2 Q8_0): ~0.2 / 0.45 / 0.6 / 0.75 for matches of 1 / 2 / 3 / 4-7 tokens, 0.9
# from 8 tokens on. A full MAX_MATCH match (32 tokens in a row) is a copy under way: on the 1.5B every
# such draft of the quick suite was accepted whole, and at 0.99 its first draft runs to 31 tokens
# instead of 15. Matches of 16-31 tokens keep 0.92: it is where a weaker model's copy ends (the
# 135M left fnmatch.filter's source 2 tokens into an 11-token draft drafted at 0.99), and on a steep
# cost curve such a miss costs more than the longer draft wins. Replayed on recorded greedy outputs
# of the full suite with each model's cost curve (benchmarks/replay_bench.py; grounded / code modeled
# speedup): 0.92 / 0.99 gives 1.96x / 2.62x on the 1.5B (0.97 / 0.99: the same; 0.92 / 0.95: 1.97x /
# 2.62x) and 1.43x / 1.51x on the 135M (0.97 / 0.99: 1.43x / 1.46x; 0.92 / 0.95: 1.43x / 1.51x).
# Observed acceptance per bucket takes over after a few steps; shadow scoring keeps it fresh while
# not drafting. Matches of 8-15 and 16-31 tokens start at 0.85 / 0.9 (were 0.9 / 0.92): with decodes
# run at the cheapest size (cost.py) a 16-row decode costs less than a 6-row one did, so a chance
# match in a chat reply was drafted 15 tokens long at 0.94 and failed at its first (replayed, the
# drafts of everyday kinds at estimates 0.87-0.96 kept half the tokens the estimate promised, those
# of copy kinds as many). Replayed with the 1.5B's full measured curve: quick chat 0.99x -> 1.03x,
# summary 0.97x -> 0.99x, code 1.70x -> 1.76x, grounded 1.40x -> 1.43x; full suite code 1.77x ->
# 1.76x, grounded 1.45x the same; 135M: code 2.14x -> 2.16x, the other kinds within 0.01.
# A bucket's first draft token and the run after it are estimated apart (base.AcceptanceEstimate's
# split_first), both from these priors: a shadow scored on its first token teaches the first alone.
PRIORS = {b: p for b, p in enumerate((0.2, 0.45, 0.6, 0.75, 0.85, 0.9, 0.99))}
# A reply copies little while under COPY_RATE of its tokens so far came in a copy (the follower's run
# of COPY_RUN or more): SENSE then searches neither its live context nor documents (sense.py). Keying this drafter's
# matches apart by it (priors of their own, lower for the long matches) was replayed on both models'
# quick-suite recordings: the 135M's everyday kinds +0.01-0.02, the 1.5B's grounded 1.62x -> 1.56x
# and the 135M's code 2.05x -> 1.96x (a copy begun late is drafted later): not kept.
COPY_RATE = 0.2
COPY_RUN = 4
PAST_STOP = 0.1  # a token past a stop: its chance after those before it (what the answer writes there is rarely the next header)
PLACE_AFTER_EDIT = 4  # soon after the output left a copy, only a match this long moves the cursor elsewhere


def match_length(ctx: Sequence[int], end: int, limit: int = MAX_MATCH) -> int:
    """How many tokens in a row before position `end` (< len(ctx)) equal the context's last tokens."""
    p, m = len(ctx), 0
    while m < limit and m < end and ctx[end - 1 - m] == ctx[p - 1 - m]:
        m += 1
    return m


class PromptLookupDrafter(Drafter):
    name = "pld"

    def __init__(self, max_n: int = MAX_N, rewrap: Callable[[Sequence[int]], list[int] | None] | None = None,
                 fixed: Callable[[int], bool] | None = None, stops: Callable[[Sequence[int]], list[int]] | None = None):
        self.max_n = max_n
        self.rewrap = rewrap  # prompt tokens -> the prompt with line wraps joined (None: no wraps)
        self.stops = stops  # prompt tokens -> where a copy of them stops (copy_stops.py; None: nowhere)
        self.fixed = fixed  # token -> True for the template's control tokens, never part of a learned edit
        self.context: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> start of its latest continuation
        self._recent: dict[tuple[int, ...], list[int]] = {}  # max_n-gram -> starts of its last CANDIDATES
        self.estimate = AcceptanceEstimate(PRIORS, split_first=True)
        self._stops: list[int] = []  # [s] ascending context positions a copy stops before
        self.follower = Follower(self.context, fixed)  # where in the context the output is copying from
        self._written = self._copied = 0  # output tokens so far, those of them written in a copy
        self._cheap = False  # verification is cheap (the loop says so each reply): proposals built whole

    def begin(self, prompt: Sequence[int]) -> None:
        self.context = []
        self._index = {}
        self._recent = {}
        self._index_tokens(prompt)  # not `extend`: the prompt is not output that follows a copy
        joined = self.rewrap(prompt) if self.rewrap is not None else None
        if joined:
            self._index_tokens(joined)  # last: the most recent place, followed unless the raw one matches further
        stops = []
        if self.stops is not None:
            stops = self.stops(prompt) + [len(prompt) + i for i in (self.stops(joined) if joined else [])]
        self._stops = sorted(stops)  # [s] ascending
        self.follower = Follower(self.context, self.fixed, stops=frozenset(stops))
        self._written = self._copied = 0

    def cheap_verification(self, cheap: bool) -> None:
        self._cheap = cheap  # where a tree fills the decode (SENSE's, grafted), a long tail still counts

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            self._index_tokens((t,))
            self.follower.step(int(t), self.context)
        self._written += len(tokens)
        if self.run >= COPY_RUN:
            self._copied += len(tokens)

    @property
    def copying_little(self) -> bool:
        """Whether under COPY_RATE of the reply's tokens so far came in a copy (False before the first)."""
        return self._written > 0 and self._copied < COPY_RATE * self._written

    @property
    def run(self) -> int:
        """Tokens the output has copied in a row (a learned replacement does not end a copy; the
        first return after an edit starts a new run)."""
        return self.follower.run

    def _index_tokens(self, tokens: Sequence[int]) -> None:
        ctx = self.context
        for t in tokens:
            p = len(ctx)  # the new token's position: every n-gram ending at p-1 now has a continuation
            for n in range(1, self.max_n + 1):
                if p - n < 0:
                    break
                key = tuple(ctx[p - n : p])
                self._index[key] = p
                if n == self.max_n:
                    starts = self._recent.setdefault(key, [])
                    starts.append(p)
                    del starts[:-CANDIDATES]
            ctx.append(int(t))

    def propose(self, max_len: int) -> Draft | None:
        """The copy under way from the follower's cursor (replacements made), unless an n-gram
        lookup finds a longer match (or one as long, once the run is PLACE_AFTER_EDIT long: the
        lookup's latest place, as before the follower) elsewhere; else the lookup's draft."""
        f = self.follower
        found = self._lookup()
        ahead = f.synced and (f.pending or f.cursor < len(self.context))
        if ahead and (found is None or self.run > found[1] or self.run == found[1] < PLACE_AFTER_EDIT):
            start, match = None, self.run
        elif found is not None:
            start, match = found
            if f.left_at is None or match >= PLACE_AFTER_EDIT:  # else wait: the copy may resume after an edit
                f.place(start, run=match)
        else:
            return None
        key = bisect.bisect_right(MATCH_BUCKETS, min(match, MAX_MATCH))  # bisect: no numpy on scalars per step
        path = self.estimate.chain(key, max_len, useful=not self._cheap)  # [n] built only as far as it can count
        at = f.cursor if start is None else start
        # a match reaching back past the place it continues from (the output already wrote the
        # span since that place once more, "noche de la noche de la"): a loop, drafted on through
        # the context's end (an overlapping copy) instead of one period a draft
        tokens = f.ahead(len(path), start=start, overlap=match >= len(self.context) - at)
        if not tokens:
            return None
        path, crossed = path[: len(tokens)], f.stop_in_ahead
        if crossed is not None:  # what follows a passage is doubted, not cut: a padded decode carries it for nothing
            path[crossed:] *= PAST_STOP  # (still `geometric`: the usual chain up to the doubt)
        return Draft(tokens=np.asarray(tokens, dtype=np.int32), source=self.name, acceptance=self.estimate.get(key), key=key,
                     path_probs=path, geometric=True)

    def _lookup(self) -> tuple[int, int] | None:
        """(start, match length) of the latest earlier place of the context's last n-gram (n = max_n
        down to 1) that has a continuation; of several places of a max_n-gram, the longest match."""
        ctx = self.context
        for n in range(min(self.max_n, len(ctx)), 0, -1):
            gram = tuple(ctx[-n:])
            start = self._index.get(gram)
            if start is None:
                continue
            match = match_length(ctx, start)
            if n == self.max_n:  # several earlier places share this n-gram: follow the longest match
                for other in self._recent[gram][-2::-1]:
                    m = match_length(ctx, other)
                    if m > match:
                        start, match = other, m
            before = bisect.bisect_left(self._stops, start) - 1  # the last stop before start
            if before >= 0 and start - match <= self._stops[before]:  # the match crosses it: the copy
                match = start - int(self._stops[before])  # before it ended there, count from the stop on
            if start < len(ctx):
                return start, match
        return None

    def update(self, feedback: Feedback) -> None:
        drafted = feedback.drafted
        self.estimate.observe(feedback.draft.key, drafted, feedback.accepted)
        if feedback.accepted < drafted:
            self.follower.rejected_at(feedback.accepted)
