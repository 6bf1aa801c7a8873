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
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..speculative.drafters.trie import continuations
from ..speculative.loop import MAX_DRAFT  # the loop's longest draft


def _longest_agreement(source: np.ndarray, recent: np.ndarray, upcoming: np.ndarray) -> int:
    """Longest prefix of `upcoming` [u] that follows some occurrence of `recent` [a] in `source`."""
    a, u = len(recent), len(upcoming)
    if u == 0 or len(source) <= a:
        return 0
    ends = np.flatnonzero(source[a - 1 : -1] == recent[-1]) + a - 1  # last index of each candidate
    for back in range(1, a):
        ends = ends[source[ends - back] == recent[-1 - back]]
    if len(ends) == 0:
        return 0
    cont = continuations(source, ends + 1, u)  # [m, u] the continuation after each occurrence
    return int(np.cumprod(cont == upcoming[None, :], axis=1).sum(axis=1).max())


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
    stream = np.concatenate([np.asarray(prompt, np.int64), out])
    extra = [np.asarray(s, np.int64) for s in sources if len(s)]
    p = len(prompt)
    i, forwards = 1, 1  # the prefill's forward chose the first token
    while i < len(out):
        live = stream[: p + i]
        recent = live[-anchor:]
        upcoming = out[i : i + max_draft]
        best = max(_longest_agreement(s, recent, upcoming) for s in [live, *extra])
        i += best + 1
        forwards += 1
    return len(out) / forwards
