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
from sense_local.grounding.retrieve import COVERAGE_FLOOR, RANKERS, PassageRetriever
from benchmarks.doc_questions import (HELD_OUT, HELD_OUT_2, QUESTIONS, UNRELATED, UNRELATED_HELD_OUT,
                                      UNRELATED_HELD_OUT_2, corpus_topics)
from sense_local.bench.stores import pydoc_store


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
            topics = [topic_of(h.passage.path) for h in retriever.search(q.question, max(ks), gate=False)]
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


def measure_gate(engine: Engine, store, questions=QUESTIONS, unrelated=UNRELATED, held_out=HELD_OUT,
                 unrelated_held_out=UNRELATED_HELD_OUT, held_out_2=HELD_OUT_2,
                 unrelated_held_out_2=UNRELATED_HELD_OUT_2) -> dict:
    """The relevance gate (grounding/retrieve.py Evidence) on labelled and unrelated questions: recall@3
    of the labelled ones with the gate on (a gated question counts as a miss), how many held-out
    questions in users' words pass it, and how often an unrelated question still gets sources."""
    retriever = PassageRetriever(engine, store, "fused")
    rows = []
    sets = [("labelled", q.question, q.topic) for q in questions] + [("held-out", q.question, q.topic) for q in held_out]
    sets += [("held-out 2", q.question, q.topic) for q in held_out_2]
    sets += [("unrelated", text, None) for text in unrelated] + [("unrelated held-out", text, None) for text in unrelated_held_out]
    sets += [("unrelated held-out 2", text, None) for text in unrelated_held_out_2]
    for kind, text, topic in sets:
        hits, ev = retriever.search_with_evidence(text, 3)
        rows.append({"kind": kind, "question": text, "coverage": round(ev.coverage, 3), "bm25": round(ev.bm25, 3),
                     "votes": float(f"{ev.votes:.3g}"), "floor": ev.floor, "relevant": ev.relevant,
                     "found": topic is not None and topic in [topic_of(h.passage.path) for h in hits]})

    def share(kind, key):
        group = [r for r in rows if r["kind"] == kind]
        return round(sum(all(r[k] for k in key) for r in group) / max(len(group), 1), 3)

    unrelated_rows = [r for r in rows if r["kind"].startswith("unrelated")]
    return {
        "recall@3_gated": share("labelled", ("found", "relevant")),
        "recall@3_ungated": share("labelled", ("found",)),
        "held_out_passed": share("held-out", ("relevant",)),
        "held_out_found_gated": share("held-out", ("found", "relevant")),
        "held_out_2_passed": share("held-out 2", ("relevant",)),
        "held_out_2_found_gated": share("held-out 2", ("found", "relevant")),
        "held_out_2_found_ungated": share("held-out 2", ("found",)),
        "unrelated_held_out_2_sourced": share("unrelated held-out 2", ("relevant",)),
        "unrelated_sourced": share("unrelated", ("relevant",)),
        "unrelated_held_out_sourced": share("unrelated held-out", ("relevant",)),
        "unrelated_all_sourced": round(sum(r["relevant"] for r in unrelated_rows) / max(len(unrelated_rows), 1), 3),
        "sourced_unrelated": [r["question"] for r in unrelated_rows if r["relevant"]],
        "gated_labelled": [r["question"] for r in rows if r["kind"].startswith(("labelled", "held-out")) and not r["relevant"]],
        "floor": rows[0]["floor"],
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
        floor = "words only" if gate["floor"] is None else f"votes >= {gate['floor']:.2g}"
        print(f"gate (coverage >= {COVERAGE_FLOOR}, {floor}): recall@3 {gate['recall@3_gated']:.3f} gated, "
              f"{gate['recall@3_ungated']:.3f} ungated ({len(QUESTIONS)} labelled); held-out in users' words: "
              f"{gate['held_out_passed']:.3f} pass, {gate['held_out_found_gated']:.3f} found@3 ({len(HELD_OUT)})")
        print(f"unrelated questions sourced: {gate['unrelated_sourced']:.3f} of {len(UNRELATED)}, held-out "
              f"{gate['unrelated_held_out_sourced']:.3f} of {len(UNRELATED_HELD_OUT)}, all "
              f"{gate['unrelated_all_sourced']:.3f}: {gate['sourced_unrelated']}")
        print(f"second held-out sets: {gate['held_out_2_passed']:.3f} pass, found@3 {gate['held_out_2_found_gated']:.3f} gated "
              f"({gate['held_out_2_found_ungated']:.3f} ungated) of {len(HELD_OUT_2)}; unrelated sourced "
              f"{gate['unrelated_held_out_2_sourced']:.3f} of {len(UNRELATED_HELD_OUT_2)}")
        if gate["gated_labelled"]:
            print(f"labelled questions gated: {gate['gated_labelled']}")
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
