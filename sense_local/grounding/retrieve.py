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
from .gate import COVERAGE_FLOOR, VOTE_TEMPERATURE, background_for

RANKERS = ("bm25", "hidden", "fused")
DEFAULT_RANKER = "fused"
VOTE_K = 16  # neighbours per question position
RRF_K = 60


@dataclass
class Evidence:
    """How strongly the documents bear on a question (the gate: gate.py). `relevant`: its words are
    in the documents (coverage) and, where the store's key states separate topics (`floor` not
    None), the best passage's votes reach the floor; a best word match in a document the model has
    not read yet (`unread`) cannot be voted for, so words decide there."""

    coverage: float  # idf-weighted share of the question's content words found in the documents
    bm25: float  # the best passage's BM25 score (kept for the measurement)
    votes: float  # the best passage's hidden-state votes per question token (0: none computed)
    floor: float | None = None  # the votes the store's background asks for; None: words alone
    unread: bool = False

    @property
    def relevant(self) -> bool:
        if self.coverage < COVERAGE_FLOOR:
            return False
        return self.floor is None or self.unread or self.votes >= self.floor


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
        if not gate:
            return self._rank(question, k)[0]
        coverage = self.store.passages.coverage(question)
        if coverage < COVERAGE_FLOOR:  # gated by its words: no need to rank
            return []
        hits, lexical, semantic = self._rank(question, k)
        return hits if self._evidence(question, coverage, lexical, semantic).relevant else []

    def search_with_evidence(self, question: str, k: int = 3) -> tuple[list[PassageHit], Evidence]:
        """The k best passages however weak, and how strongly the documents answer the question."""
        hits, lexical, semantic = self._rank(question, k)
        return hits, self._evidence(question, self.store.passages.coverage(question), lexical, semantic)

    def _evidence(self, question: str, coverage: float, lexical: list[PassageHit],
                  semantic: list[PassageHit]) -> Evidence:
        evidence = Evidence(coverage, bm25=lexical[0].score if lexical else 0.0, votes=0.0)
        if self.ranker == "bm25" or self.store.n_vectors == 0:
            return evidence  # no hidden-state ranking: words decide
        evidence.votes = self._votes(question, semantic)
        evidence.floor = background_for(self.store, self.engine.key_layer, self.question_votes).floor
        unread = {d.path for d in self.store.unkeyed()}
        evidence.unread = bool(lexical) and lexical[0].passage.path in unread
        return evidence

    def warm_gate(self) -> None:
        """Measure the gate's background of this store now (gate.py; kept beside the store), so the
        first question does not wait for it (~7 s on the 1.5B)."""
        if self.ranker != "bm25" and self.store.n_vectors > 0:
            background_for(self.store, self.engine.key_layer, self.question_votes)

    def question_votes(self, question: str) -> float:
        """The best passage's hidden-state votes per question token."""
        return self._votes(question, self.by_keys(question, 1))

    def _votes(self, question: str, semantic: list[PassageHit]) -> float:
        n_query = max(len(self.engine.tokenize(question.strip(), add_special=False)), 1)
        return semantic[0].score / n_query if semantic else 0.0

    def _rank(self, question: str, k: int) -> tuple[list[PassageHit], list[PassageHit], list[PassageHit]]:
        """(the k best passages by this ranker, the lexical list, the hidden-state list)."""
        depth = max(4 * k, 20)
        lexical = self.bm25(question, depth) if self.ranker != "hidden" else []
        semantic = self.by_keys(question, depth) if self.ranker != "bm25" else []
        if self.ranker == "bm25":
            return distinct(lexical, k), lexical, semantic
        if self.ranker == "hidden":
            return distinct(semantic, k), lexical, semantic
        # a document the model has not read yet (words committed first, keys to come) has no hidden
        # rank: it stands in with its word rank, so it is not pushed down for what is not there yet
        unread = {d.path for d in self.store.unkeyed()}
        stand_in = [(rank, hit) for rank, hit in enumerate(lexical) if hit.passage.path in unread]
        return distinct(fuse([lexical, semantic], None, stand_in), k), lexical, semantic

    def bm25(self, question: str, k: int) -> list[PassageHit]:
        live = self.store.live_documents()
        return [PassageHit(row, score) for row, score in self.store.passages.search(question, k, live)]

    def by_keys(self, question: str, k: int) -> list[PassageHit]:
        tokens = self.engine.tokenize(question.strip(), add_special=True)
        if len(tokens) < 2 or self.store.n_vectors == 0:
            return []
        self.store.require_key_layer(self.engine.key_layer)
        queries = self.engine.side_keys(tokens)[1:]  # [n-1, n_embd]; the BOS position carries no question
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


def distinct(hits: list[PassageHit], k: int) -> list[PassageHit]:
    """The first k hits whose texts differ (whitespace aside). A text two documents hold (a copied
    file, a section two pages repeat) is given once, by its best-ranked copy, and the next passage
    takes its place: on the pydoc store 6 of 94 labelled questions had one passage twice among their
    3 (the grounded-chat benchmark's fourth question: 124 tokens prefilled twice)."""
    seen: set[str] = set()
    kept = []
    for hit in hits:
        text = " ".join(hit.passage.text.split())
        if text not in seen:
            seen.add(text)
            kept.append(hit)
            if len(kept) == k:
                break
    return kept


def fuse(lists: list[list[PassageHit]], k: int | None, extra: list[tuple[int, PassageHit]] = ()) -> list[PassageHit]:
    """Reciprocal-rank fusion: score = sum over lists of 1 / (RRF_K + rank); `extra` adds (rank, hit)
    entries of a list that is not there (a stand-in rank). The k best (None: all, best first)."""
    scores: dict[int, float] = {}
    rows: dict[int, PassageRow] = {}
    ranked = [(rank, hit) for hits in lists for rank, hit in enumerate(hits)] + list(extra)
    for rank, hit in ranked:
        scores[hit.passage.rowid] = scores.get(hit.passage.rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        rows[hit.passage.rowid] = hit.passage
    best = sorted(scores, key=lambda r: -scores[r])[:k]
    return [PassageHit(rows[r], scores[r]) for r in best]
