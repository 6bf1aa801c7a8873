"""The copy ceiling: the tau of an oracle that drafts by copying, to tell a drafter's shortfall from
what copying can give at all on a task.

Every drafter here (pld, rest, sense) drafts tokens that follow an earlier occurrence of what was
just written: in the prompt (or its joined-wrap copy), the output so far, or the documents. The
oracle knows the output in advance. At each step it looks at every occurrence of the last `anchor`
committed tokens in those sources, takes the one whose continuation agrees longest with what the
target writes next, and drafts exactly that much; verification is free. Under exact acceptance no
copying drafter that needs an anchor of that length can do better, whatever its retrieval: tau =
tokens / forwards, counted as the loop counts them (the prefill's forward gives the first token;
a last draft may run to the end of the output, its forward's own token then unused).

`costed_ceiling` prices the same oracle on a cost curve: at each position it may verify any part of
the copy it sees, a decode of k tokens costing c(k), and takes the cheapest schedule over the whole
output (dynamic programming). Its speed over plain decoding is what a lossless copying drafter could
reach on that machine at best: a bar above it asks for more than copying can give there.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..speculative.drafters.trie import continuations
from ..speculative.loop import MAX_DRAFT  # the loop's longest draft


def occurrence_ends(source: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """[m] the last index of each occurrence of `recent` [a] in `source` that has a token after it."""
    a = len(recent)
    if len(source) <= a:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(source[a - 1 : -1] == recent[-1]) + a - 1
    for back in range(1, a):
        ends = ends[source[ends - back] == recent[-1 - back]]
    return ends


def _longest_agreement(source: np.ndarray, recent: np.ndarray, upcoming: np.ndarray) -> int:
    """Longest prefix of `upcoming` [u] that follows some occurrence of `recent` [a] in `source`."""
    u = len(upcoming)
    ends = occurrence_ends(source, recent) if u else np.zeros(0, np.int64)
    if len(ends) == 0:
        return 0
    cont = continuations(source, ends + 1, u)  # [m, u] the continuation after each occurrence
    return int(np.cumprod(cont == upcoming[None, :], axis=1).sum(axis=1).max())


class _CopyOracle:
    """How much of the output the oracle can draft at each position: the longest continuation of
    an occurrence of the last `anchor` committed tokens, in the live stream or a source, that agrees
    with what the target writes next (at most `max_draft` tokens)."""

    def __init__(self, prompt: Sequence[int], out: np.ndarray, sources: Sequence[Sequence[int]], anchor: int,
                 max_draft: int):
        self.out, self.anchor, self.max_draft = out, anchor, max_draft
        self.stream = np.concatenate([np.asarray(prompt, np.int64), out])  # [p + n] prompt, then output
        self.extra = [np.asarray(s, np.int64) for s in sources if len(s)]
        self.p = len(prompt)

    def at(self, i: int) -> int:
        """Tokens the oracle drafts after output position i - 1 is committed."""
        live = self.stream[: self.p + i]
        upcoming = self.out[i : i + self.max_draft]
        return max(_longest_agreement(s, live[-self.anchor:], upcoming) for s in [live, *self.extra])


def copy_ceiling(
    prompt: Sequence[int], output: Sequence[int], sources: Sequence[Sequence[int]] = (), anchor: int = 1,
    max_draft: int = MAX_DRAFT,
) -> float:
    """tau of the copying oracle. prompt, output: token ids; sources: further token streams to copy
    from (the prompt's joined-wrap tokens, the documents' tokens). The live stream prompt + output
    so far is always a source."""
    out = np.asarray(output, np.int64)
    if len(out) == 0:
        return 0.0
    copy = _CopyOracle(prompt, out, sources, anchor, max_draft)
    i, forwards = 1, 1  # the prefill's forward chose the first token
    while i < len(out):
        i += copy.at(i) + 1
        forwards += 1
    return len(out) / forwards


def costed_ceiling(
    prompt: Sequence[int], output: Sequence[int], cost, sources: Sequence[Sequence[int]] = (), anchor: int = 1,
    max_draft: int = MAX_DRAFT,
) -> float:
    """Speed over plain decoding of the copying oracle when a decode of k tokens costs `cost(k)`
    one-token decodes (cost.CostCurve.cost): the cheapest way through the output, each decode
    verifying k <= the copy available there and yielding k + 1 tokens. Plain decoding pays one
    decode per token after the first (the prefill's)."""
    out = np.asarray(output, np.int64)
    n = len(out)
    if n < 2:
        return 1.0
    copy = _CopyOracle(prompt, out, sources, anchor, max_draft)
    best = np.zeros(n + 1)  # best[i]: least cost from output position i (its token not yet chosen) on
    for i in range(n - 1, 0, -1):
        best[i] = min(cost(k + 1) + best[min(n, i + k + 1)] for k in range(copy.at(i) + 1))
    return (n - 1) / best[1]
