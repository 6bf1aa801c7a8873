"""Passage retrieval for grounded chat: lexical (BM25), the target's hidden states, or both fused.

- `bm25`: SQLite FTS5 over passage text (passages.py).
- `hidden`: the question is run through the target once; every question position's final hidden
  state searches the token-level index (the same one SENSE drafts from), and each neighbour votes for
  the passage holding it with weight exp((sim - 1) / VOTE_TEMPERATURE). No extra index is needed.
- `fused`: reciprocal-rank fusion of the two lists (each contributes 1 / (RRF_K + rank)).
Which is the default was chosen by measuring recall on the question set (benchmarks/doc_questions.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..datastore.passages import PassageRow
from ..errors import SenseError

RANKERS = ("bm25", "hidden", "fused")
DEFAULT_RANKER = "fused"
VOTE_K = 16  # neighbours per question position
VOTE_TEMPERATURE = 0.05
RRF_K = 60
BM25_FLOOR = 0.0  # the gate is off: see Evidence for the measurement
VOTES_FLOOR = 0.0


@dataclass
class Evidence:
    """How strongly the documents bear on a question: the best passage's BM25 score, and its
    hidden-state votes per question token. Below both floors nothing would be retrieved.

    The floors are 0 (the gate is off): measured on the 50 labelled questions over 76 pydoc topics
    and 24 unrelated ones (`benchmarks/retrieval_bench.py --gate`, the 135M), no floor on either
    figure, or on both together, keeps recall@3 >= 0.9 with unrelated questions sourced <= 10%
    (best: 21% at recall 0.88; BM25 alone: 8% at recall 0.84). A gate needs a better feature."""

    bm25: float
    votes: float

    @property
    def relevant(self) -> bool:
        return self.bm25 >= BM25_FLOOR or self.votes >= VOTES_FLOOR


@dataclass
class PassageHit:
    passage: PassageRow
    score: float  # ranker-specific, higher is better


class PassageRetriever:
    def __init__(self, engine, store, ranker: str = DEFAULT_RANKER):
        if ranker not in RANKERS:
            raise SenseError(f"unknown ranker '{ranker}' (known: {', '.join(RANKERS)})")
        self.engine = engine
        self.store = store
        self.ranker = ranker

    def search(self, question: str, k: int = 3) -> list[PassageHit]:
        """The k best passages, or none when nothing in the documents is close to the question."""
        hits, evidence = self.search_with_evidence(question, k)
        return hits if evidence.relevant else []

    def search_with_evidence(self, question: str, k: int = 3) -> tuple[list[PassageHit], "Evidence"]:
        """The k best passages however weak, and how strongly the documents answer the question."""
        depth = max(4 * k, 20)
        lexical = self.bm25(question, depth) if self.ranker != "hidden" else []
        semantic = self.hidden(question, depth) if self.ranker != "bm25" else []
        n_query = max(len(self.engine.tokenize(question.strip(), add_special=False)), 1)
        evidence = Evidence(bm25=lexical[0].score if lexical else 0.0,
                            votes=semantic[0].score / n_query if semantic else 0.0)
        if self.ranker == "bm25":
            return lexical[:k], evidence
        if self.ranker == "hidden":
            return semantic[:k], evidence
        # a document the model has not read yet (words committed first, keys to come) has no hidden
        # rank: it stands in with its word rank, so it is not pushed down for what is not there yet
        unread = {d.path for d in self.store.unkeyed()}
        stand_in = [(rank, hit) for rank, hit in enumerate(lexical) if hit.passage.path in unread]
        return fuse([lexical, semantic], k, stand_in), evidence

    def bm25(self, question: str, k: int) -> list[PassageHit]:
        live = self.store.live_documents()
        return [PassageHit(row, score) for row, score in self.store.passages.search(question, k, live)]

    def hidden(self, question: str, k: int) -> list[PassageHit]:
        tokens = self.engine.tokenize(question.strip(), add_special=True)
        if len(tokens) < 2 or self.store.n_vectors == 0:
            return []
        self.store.require_key_layer(self.engine.key_layer)
        queries = self.engine.side_hidden(tokens)[1:]  # [n-1, n_embd]; the BOS position carries no question
        found = self.store.search(queries, k=VOTE_K, continuation=0)
        starts, ends, rowids = self.store.passage_spans()
        if len(starts) == 0:
            return []
        pos = found.positions.ravel()
        which = np.searchsorted(starts, pos, side="right") - 1
        ok = (pos >= 0) & (which >= 0)
        which = np.where(ok, which, 0)
        ok &= pos < ends[which]
        weights = np.exp((found.similarity.ravel() - 1.0) / VOTE_TEMPERATURE)
        votes = np.bincount(which[ok], weights=weights[ok], minlength=len(starts))
        best = np.argsort(-votes)[:k]
        best = best[votes[best] > 0]
        rows = self.store.passages.rows(rowids[best].tolist())
        return [PassageHit(rows[int(rowids[b])], float(votes[b])) for b in best if int(rowids[b]) in rows]


def fuse(lists: list[list[PassageHit]], k: int, extra: list[tuple[int, PassageHit]] = ()) -> list[PassageHit]:
    """Reciprocal-rank fusion: score = sum over lists of 1 / (RRF_K + rank); `extra` adds (rank, hit)
    entries of a list that is not there (a stand-in rank)."""
    scores: dict[int, float] = {}
    rows: dict[int, PassageRow] = {}
    ranked = [(rank, hit) for hits in lists for rank, hit in enumerate(hits)] + list(extra)
    for rank, hit in ranked:
        scores[hit.passage.rowid] = scores.get(hit.passage.rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        rows[hit.passage.rowid] = hit.passage
    best = sorted(scores, key=lambda r: -scores[r])[:k]
    return [PassageHit(rows[r], scores[r]) for r in best]
