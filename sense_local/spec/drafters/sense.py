"""SENSE drafter: Semantic Embedding Navigation.

The query is the target's final hidden state at the last evaluated position: the state that just
chose the newest token `t` (already computed by the verification decode; no extra forward pass).
Its nearest neighbours among stored hidden states come from
  * the live context store: every committed position of this conversation (prompt included), and
  * the document store: every position of the user's indexed documents (when one is loaded).
A neighbour whose own next token agrees with `t` proposes the tokens that followed it. Proposals
are merged into a token trie weighted by similarity; the heaviest path is the draft, and the loop's
cost policy decides how much of it to verify from the learned acceptance of similar drafts.
Per step: two k-NN searches and array work on at most 2k continuations.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..context_store import ContextStore
from ..types import Draft, Feedback
from .base import AcceptanceEstimate, Drafter
from .trie import heaviest_path

SIM_BUCKETS = (0.85, 0.9, 0.95, 0.98)  # similarity of the best agreeing neighbour
SUPPORT_BUCKETS = (2, 4)  # agreeing continuations on the drafted path: 1 | 2-3 | 4+
# Priors measured with a prototype on this model: the top neighbour's next token is right ~65% of
# the time, ~76% at cosine >= 0.9; continuations of near-duplicates (>= 0.98) rarely break.
PRIORS = {
    (s, u): min(0.95, (0.3, 0.45, 0.6, 0.75, 0.85)[s] + 0.05 * u)
    for s in range(len(SIM_BUCKETS) + 1)
    for u in range(len(SUPPORT_BUCKETS) + 1)
}
SHARPNESS = 0.05  # weight = exp((similarity - 1) / SHARPNESS): near-duplicates dominate the vote


class SenseDrafter(Drafter):
    needs_hidden = True

    def __init__(self, engine, *, use_context: bool = True, docs=None, k: int = 8, max_len: int = 16,
                 name: str = "sense"):
        if not use_context and docs is None:
            raise ValueError("SENSE needs the live context, a document store, or both")
        self.engine = engine
        self.name = name
        self.use_context = use_context
        self.docs = docs
        self.k = k
        self.max_len = max_len
        self.context = ContextStore(engine.n_embd) if use_context else None
        self.ctx: list[int] = []
        self._added = 0  # positions [0, _added) are in the context store
        self.estimate = AcceptanceEstimate(PRIORS)

    def begin(self, prompt: Sequence[int]) -> None:
        self.ctx = [int(t) for t in prompt]
        self._added = 0
        if self.context is not None:
            self.context.reset()

    def extend(self, tokens: Sequence[int]) -> None:
        self.ctx.extend(int(t) for t in tokens)

    def _query(self) -> tuple[int, np.ndarray] | None:
        """(position, hidden state) of the last evaluated position, adding older ones to the store."""
        q = self.engine.n_past - 1  # its hidden state chose ctx[q + 1], the newest token
        if q < 0 or len(self.ctx) != q + 2:
            return None  # the engine is not where this drafter's context says: nothing to query
        hidden = self.engine.committed_hidden(q + 1)
        if hidden is None:
            return None
        if self.context is not None and self._added < q:
            self.context.add(np.arange(self._added, q), hidden[self._added : q])
            self._added = q
        return q, hidden[q]

    def _proposals(self, query: np.ndarray, newest: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Continuations [m, L] after neighbours that agree with `newest`, their similarity [m], and
        source [m] (0 = context, 1 = docs)."""
        L = self.max_len
        conts, sims, srcs = [], [], []
        if self.context is not None and len(self.context):
            keys, sim = self.context.search(query, self.k)
            ctx = np.asarray(self.ctx, np.int32)
            agree = ctx[keys + 1] == newest
            for key, s in zip(keys[agree], sim[agree]):
                cont = ctx[key + 2 : key + 2 + L]
                row = np.full(L, -1, np.int32)
                row[: len(cont)] = cont
                conts.append(row)
                sims.append(s)
                srcs.append(0)
        if self.docs is not None and self.docs.n_vectors:
            found = self.docs.search(query[None, :], self.k, continuation=L + 1)
            agree = found.continuations[0, :, 0] == newest
            for row, s in zip(found.continuations[0, agree, 1:], found.similarity[0, agree]):
                conts.append(row)
                sims.append(s)
                srcs.append(1)
        if not conts:
            return np.zeros((0, L), np.int32), np.zeros(0, np.float32), np.zeros(0, np.int8)
        return np.stack(conts), np.asarray(sims, np.float32), np.asarray(srcs, np.int8)

    def propose(self, max_len: int) -> Draft | None:
        found = self._query()
        if found is None:
            return None
        _, query = found
        conts, sims, srcs = self._proposals(query, self.ctx[-1])
        if len(conts) == 0:
            return None
        weights = np.exp((sims - 1.0) / SHARPNESS)
        tokens, _, members = heaviest_path(conts, weights, min(max_len, self.max_len))
        if len(tokens) == 0:
            return None
        best = float(sims[members].max()) if members.any() else float(sims.max())
        support = int(members.sum())
        key = (int(np.searchsorted(SIM_BUCKETS, best)), int(np.searchsorted(SUPPORT_BUCKETS, support, side="right")))
        on_path = srcs[members] if members.any() else srcs
        source = "docs" if (on_path == 1).sum() * 2 > len(on_path) else "context"
        return Draft(tokens=tokens, source=source, acceptance=self.estimate.get(key), key=key)

    def update(self, feedback: Feedback) -> None:
        self.estimate.observe(feedback.draft.key, len(feedback.draft.tokens), feedback.accepted)
