"""Passage retrieval quality on the pydoc question set: recall@1/@3/@5 and time per question per ranker.

A question counts as found at k when one of the top-k passages comes from its labelled topic.
Run: `scripts/bench_retrieval [--json FILE]` (builds the all-topics store once, then cached).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sense_local.engine import Engine
from sense_local.key_tap import layer_name
from sense_local.grounding.retrieve import RANKERS, PassageRetriever
from benchmarks.doc_questions import QUESTIONS, UNRELATED, corpus_topics
from sense_local.bench.runner import pydoc_store


def topic_of(path: str) -> str:
    return Path(path).stem


def measure_recall(engine: Engine, store, rankers=RANKERS, questions=QUESTIONS, ks=(1, 3, 5)) -> dict:
    results = {}
    for ranker in rankers:
        retriever = PassageRetriever(engine, store, ranker)
        found = {k: 0 for k in ks}
        misses = []
        t0 = time.perf_counter()
        for q in questions:
            topics = [topic_of(h.passage.path) for h in retriever.search(q.question, max(ks))]
            for k in ks:
                found[k] += q.topic in topics[:k]
            if q.topic not in topics[:3]:
                misses.append({"topic": q.topic, "question": q.question, "got": topics[:3]})
        seconds = time.perf_counter() - t0
        results[ranker] = {
            **{f"recall@{k}": round(found[k] / len(questions), 3) for k in ks},
            "ms_per_question": round(1000 * seconds / len(questions), 1),
            "misses": misses,
        }
    return results


def measure_gate(engine: Engine, store, questions=QUESTIONS, unrelated=UNRELATED) -> dict:
    """Evidence (best BM25 score, hidden votes per question token) for labelled questions and for
    unrelated ones, and what the relevance floors in grounding/retrieve.py make of them: recall@3 of
    the labelled questions with the gate on, and how often an unrelated question still gets sources."""
    retriever = PassageRetriever(engine, store, "fused")
    rows = []
    for q in questions:
        hits, ev = retriever.search_with_evidence(q.question, 3)
        rows.append({"kind": "labelled", "question": q.question, "bm25": round(ev.bm25, 3),
                     "votes": round(ev.votes, 4), "relevant": ev.relevant,
                     "found": q.topic in [topic_of(h.passage.path) for h in hits]})
    for text in unrelated:
        _, ev = retriever.search_with_evidence(text, 3)
        rows.append({"kind": "unrelated", "question": text, "bm25": round(ev.bm25, 3), "votes": round(ev.votes, 4),
                     "relevant": ev.relevant, "found": False})
    labelled = [r for r in rows if r["kind"] == "labelled"]
    other = [r for r in rows if r["kind"] == "unrelated"]
    return {
        "recall@3_gated": round(sum(r["found"] and r["relevant"] for r in labelled) / max(len(labelled), 1), 3),
        "recall@3_ungated": round(sum(r["found"] for r in labelled) / max(len(labelled), 1), 3),
        "unrelated_sourced": round(sum(r["relevant"] for r in other) / max(len(other), 1), 3),
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_retrieval", description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--gate", action="store_true",
                        help="also measure the relevance evidence of labelled vs unrelated questions")
    parser.add_argument("--key-layer", default="default", help="a block number, final or default (the store's keys)")
    args = parser.parse_args(argv)
    from sense_local.engine import parse_key_layer
    from sense_local.registry import resolve_model

    engine = Engine(resolve_model(args.model), n_ctx=2048, key_layer=parse_key_layer(args.key_layer))
    store = pydoc_store(engine, "all-topics", corpus_topics())
    results = measure_recall(engine, store)
    if args.gate:
        gate = measure_gate(engine, store)
        labelled = [r for r in gate["rows"] if r["kind"] == "labelled"]
        unrelated = [r for r in gate["rows"] if r["kind"] == "unrelated"]
        for floor in (4, 6, 8, 10):
            recall = sum(r["found"] and r["bm25"] >= floor for r in labelled) / len(labelled)
            sourced = sum(r["bm25"] >= floor for r in unrelated) / len(unrelated)
            print(f"BM25 floor {floor}: recall@3 {recall:.3f}, unrelated questions sourced {sourced:.3f}")
    print(f"keys: {layer_name(engine.key_layer)}; {len(QUESTIONS)} questions, {len(store.manifest.documents)} documents, "
          f"{store.passages.count(store.live_documents())} passages")
    print(f"{'ranker':<8} {'R@1':>6} {'R@3':>6} {'R@5':>6} {'ms/q':>7}")
    for ranker, r in results.items():
        print(f"{ranker:<8} {r['recall@1']:>6.3f} {r['recall@3']:>6.3f} {r['recall@5']:>6.3f} {r['ms_per_question']:>7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, **({"gate": gate} if args.gate else {})}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
