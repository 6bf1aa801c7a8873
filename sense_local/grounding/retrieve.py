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
COVERAGE_FLOOR = 0.55  # the relevance gate: see Evidence


@dataclass
class Evidence:
    """How strongly the documents bear on a question. The gate: a question is answered from the
    documents when at least COVERAGE_FLOOR of its content words (weighted by idf) occur in them at all
    (PassageTable.coverage); otherwise no passage is put into the prompt and none is cited.

    Measured on 50 labelled questions over 76 pydoc topics, 20 more in users' own words and 54
    unrelated ones (benchmarks/doc_questions.py, `python -m benchmarks.retrieval_bench --gate`): see
    the README's "Grounding gate" figures. The unrelated ones that pass are small talk made of
    words the documents happen to use ("Can you help me?"). The best BM25 score and the hidden-state
    votes per question token are kept for that measurement: neither separates the two sets as well
    (BM25 alone: recall 0.84 at 8% unrelated; a fitted BM25 + votes rule 0.88 / 12.5% left-one-out)."""

    coverage: float
    bm25: float
    votes: float

    @property
    def relevant(self) -> bool:
        return self.coverage >= COVERAGE_FLOOR


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

    def search(self, question: str, k: int = 3, gate: bool = True) -> list[PassageHit]:
        """The k best passages, or none when the documents are not about the question (Evidence);
        gate=False: the k best however weak."""
        if gate and self.store.passages.coverage(question) < COVERAGE_FLOOR:  # gated: no need to rank
            return []
        return self._rank(question, k)[0]

    def search_with_evidence(self, question: str, k: int = 3) -> tuple[list[PassageHit], "Evidence"]:
        """The k best passages however weak, and how strongly the documents answer the question."""
        hits, lexical, semantic = self._rank(question, k)
        n_query = max(len(self.engine.tokenize(question.strip(), add_special=False)), 1)
        evidence = Evidence(coverage=self.store.passages.coverage(question),
                            bm25=lexical[0].score if lexical else 0.0,
                            votes=semantic[0].score / n_query if semantic else 0.0)
        return hits, evidence

    def _rank(self, question: str, k: int) -> tuple[list[PassageHit], list[PassageHit], list[PassageHit]]:
        """(the k best passages by this ranker, the lexical list, the hidden-state list)."""
        depth = max(4 * k, 20)
        lexical = self.bm25(question, depth) if self.ranker != "hidden" else []
        semantic = self.hidden(question, depth) if self.ranker != "bm25" else []
        if self.ranker == "bm25":
            return lexical[:k], lexical, semantic
        if self.ranker == "hidden":
            return semantic[:k], lexical, semantic
        # a document the model has not read yet (words committed first, keys to come) has no hidden
        # rank: it stands in with its word rank, so it is not pushed down for what is not there yet
        unread = {d.path for d in self.store.unkeyed()}
        stand_in = [(rank, hit) for rank, hit in enumerate(lexical) if hit.passage.path in unread]
        return fuse([lexical, semantic], k, stand_in), lexical, semantic

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
