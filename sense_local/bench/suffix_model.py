"""A realizable copying drafter, modeled: what drafting from a user's earlier replies can reach on a
cost curve when the drafter, unlike the copy ceiling's oracle, does not know the output in advance.

The copy ceiling (copy_ceiling.py) picks, among every occurrence of the newest token, the one whose
continuation agrees longest with what the target writes next: knowledge no drafter has. This model
is SuffixDecoding's drafter instead: the longest suffix of the live stream (up to MAX_MATCH tokens)
that occurs in the stream before or in an earlier reply; the continuations of all its occurrences
voted token by token (the most frequent path, each token's share multiplied into a path
probability); each drafted token's chance of acceptance read from a table calibrated on earlier
conversations by (match length, path probability, place in the draft); and the draft cut where
expected tokens per unit of decode cost peak (nothing drafted where no length beats one plain
decode). It is one realizable design, with exact acceptance and no model run: a bar it cannot
reach while the oracle can asks for selection knowledge, not for better plumbing.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..speculative.loop import MAX_DRAFT  # the loop's longest draft
from .copy_ceiling import occurrence_ends

MAX_MATCH = 16  # longest suffix looked up
MATCH_BUCKETS = (3, 5, 8, 12)  # suffix match length: 1-2 | 3-4 | 5-7 | 8-11 | 12+
PROB_BUCKETS = (0.3, 0.6, 0.9)  # path probability: < 0.3 | 0.3-0.6 | 0.6-0.9 | >= 0.9
PLACES = 4  # place in the draft: 0, 1, 2, 3+
UNSEEN = 0.3  # acceptance of a key no calibration saw


def _key(match: int, prob: float, place: int) -> tuple[int, int, int]:
    return (int(np.searchsorted(MATCH_BUCKETS, match, side="right")),
            int(np.searchsorted(PROB_BUCKETS, prob, side="right")), min(place, PLACES - 1))


@dataclass
class SuffixDraft:
    match: int  # length of the suffix matched
    tokens: list[int]  # [k] the most frequent continuation path
    probs: list[float]  # [k] its path probability after each token


def _continuations(sources: Iterable[np.ndarray], suffix: np.ndarray, limit: int) -> list[np.ndarray]:
    """What follows each occurrence of `suffix` in the sources (at most `limit` tokens each, never empty)."""
    return [seq[e + 1 : e + 1 + limit] for seq in sources for e in occurrence_ends(seq, suffix)]


def suffix_draft(live: np.ndarray, sources: Sequence[np.ndarray], limit: int = MAX_DRAFT) -> SuffixDraft:
    """The draft after `live` [p] (prompt and output so far): the longest suffix found in live's own
    past or the sources, its occurrences' most frequent continuation."""
    sources = [live[:-1], *sources]  # live[:-1]: an occurrence of the suffix must have something after it
    for n in range(min(MAX_MATCH, len(live) - 1), 0, -1):
        conts = _continuations(sources, live[-n:], limit)
        if conts:
            break
    else:
        return SuffixDraft(0, [], [])
    tokens, probs, prob = [], [], 1.0
    while len(tokens) < limit:
        votes = Counter(int(c[len(tokens)]) for c in conts if len(c) > len(tokens))
        if not votes:
            break
        token, count = votes.most_common(1)[0]
        prob *= count / sum(votes.values())
        tokens.append(token)
        probs.append(prob)
        conts = [c for c in conts if len(c) >= len(tokens) and c[len(tokens) - 1] == token]
    return SuffixDraft(n, tokens, probs)


def _accepted(draft: Sequence[int], upcoming: Sequence[int]) -> int:
    n = 0
    for a, b in zip(draft, upcoming):
        if a != b:
            break
        n += 1
    return n


def calibrate(conversations: Iterable[tuple[Sequence[int], Sequence[int], Sequence[Sequence[int]]]]) -> dict:
    """Per-token acceptance by key, from (prompt, output, sources) triples (sources: further token
    streams copied from, e.g. earlier replies): at every output position the whole draft is
    checked, each token counted while those before it were right."""
    hits = defaultdict(lambda: [0, 0])  # key -> [accepted, tried]
    for prompt, output, sources in conversations:
        out = np.asarray(output, np.int64)
        stream = np.concatenate([np.asarray(prompt, np.int64), out])
        hist = [np.asarray(h, np.int64) for h in sources]
        for i in range(1, len(out)):
            d = suffix_draft(stream[: len(prompt) + i], hist)
            right = _accepted(d.tokens, out[i:])
            for place in range(min(len(d.tokens), right + 1)):
                h = hits[_key(d.match, d.probs[place], place)]
                h[1] += 1
                h[0] += place < right
    return {k: (a + 1) / (n + 2) for k, (a, n) in hits.items()}  # Laplace: one hit, one miss unseen


def modeled_speed(prompt: Sequence[int], output: Sequence[int], sources: Sequence[Sequence[int]],
                  table: dict, cost: Callable[[int], float]) -> tuple[float, float]:
    """(speed over plain decoding, tau) of the drafter on one reply copying from the live stream
    and `sources`, a decode of k tokens costing cost(k) one-token decodes; counted as
    costed_ceiling counts (the prefill's token free)."""
    out = np.asarray(output, np.int64)
    if len(out) < 2:
        return 1.0, float(len(out))
    stream = np.concatenate([np.asarray(prompt, np.int64), out])
    hist = [np.asarray(h, np.int64) for h in sources]
    i, time, forwards = 1, 0.0, 1
    while i < len(out):
        d = suffix_draft(stream[: len(prompt) + i], hist)
        size, best, expected, alive = 0, 1.0, 0.0, 1.0
        for place in range(len(d.tokens)):
            alive *= table.get(_key(d.match, d.probs[place], place), UNSEEN)
            expected += alive
            if (expected + 1) / cost(place + 2) > best:
                size, best = place + 1, (expected + 1) / cost(place + 2)
        time += cost(size + 1)
        forwards += 1
        i += _accepted(d.tokens[:size], out[i:]) + 1
    return (len(out) - 1) / time, len(out) / forwards
