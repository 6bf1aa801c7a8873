"""Datastore figures: indexing throughput vs raw prefill, vector dtype recall, bytes per token,
and search latency on a large synthetic store.

    python -m benchmarks.store_bench [--topics 24] [--synthetic 1000000]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sense_local import native
from sense_local.engine import Engine, parse_key_layer
from sense_local.key_tap import layer_name
from sense_local.registry import resolve_model


def raw_prefill_rate(engine: Engine, docs: list[np.ndarray], window: int) -> float:
    """Tokens/s of plain prefill (last logits only, no hidden states) over the same windows."""
    t0 = time.perf_counter()
    n = 0
    for tokens in docs:
        for s in range(0, len(tokens), window):
            engine.eval(tokens[s : s + window], 0, outputs="last", with_keys=False)
        n += len(tokens)
    return n / (time.perf_counter() - t0)


def _index_of(vectors: np.ndarray, dtype: str):
    """A usearch index of `vectors` (keys 0..n-1), built as the document store builds its own."""
    usearch = native.load_usearch()
    index = usearch.Index(ndim=vectors.shape[1], metric="cos", dtype=dtype)
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    return index


def _neighbours(index, vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    found = index.search(vectors[queries], k + 1)
    keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
    return [[key for key in row if key != q and key >= 0][:k] for q, row in zip(queries, keys)]


def next_token_recall(vectors: np.ndarray, next_tokens: np.ndarray, dtype: str, queries: np.ndarray, k: int = 8):
    """Fraction of query positions whose true next token is among the next tokens of their k
    nearest *other* positions, with vectors stored as `dtype` (ndim reduced if vectors are)."""
    index = _index_of(vectors, dtype)
    hits = sum(int(next_tokens[q] in next_tokens[nb]) for q, nb in zip(queries, _neighbours(index, vectors, queries, k)))
    return hits / len(queries), index.memory_usage / len(vectors)


def search_breadth(vectors: np.ndarray, next_tokens: np.ndarray, dtype: str, queries: np.ndarray, k: int = 8):
    """For each expansion_search (HNSW search breadth): next-token recall@k and the overlap of the
    index's k neighbours with the exact cosine k nearest (f32, self excluded)."""
    index = _index_of(vectors, dtype)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit[queries] @ unit.T  # [q, n]
    sims[np.arange(len(queries)), queries] = -np.inf
    exact = np.argpartition(-sims, k, axis=1)[:, :k]
    rows = []
    for ef in (64, 48, 32, 24):
        index.expansion_search = ef
        found = _neighbours(index, vectors, queries, k)
        recall = np.mean([next_tokens[q] in next_tokens[nb] for q, nb in zip(queries, found)])
        overlap = np.mean([len(set(nb) & set(ex.tolist())) / k for nb, ex in zip(found, exact)])
        rows.append((ef, recall, overlap))
    return rows


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--topics", type=int, default=10, help="pydoc topics to index (default 10)")
    ap.add_argument("--max-chars", type=int, default=6000, help="largest topic taken (default 6000 characters)")
    ap.add_argument("--rounds", type=int, default=3, help="raw-prefill / indexing rounds (default 3)")
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="vectors in the search-latency store (0: skip that part)")
    ap.add_argument("--synthetic-file", help="keep the synthetic index here and reuse it when present (a 1M build takes ~18 min)")
    ap.add_argument("--synthetic-dim", type=int, default=0, help="default: the model's n_embd")
    ap.add_argument("--key-layers", default="default", help="key layers to index with, compared (default: default)")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    from pydoc_data.topics import topics

    engine = Engine(resolve_model(args.model), n_ctx=4096)
    mid_sized = [t for t in topics if 2000 <= len(topics[t]) <= args.max_chars]  # ~500-1500 tokens each by default
    names = sorted(mid_sized, key=lambda t: -len(topics[t]))[: args.topics]
    tmp = Path(tempfile.mkdtemp(prefix="sense-store-bench-"))
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        for name in names:
            (corpus / f"{name}.txt").write_text(topics[name])
        docs = [np.asarray(engine.tokenize(topics[n]), np.int32) for n in names]
        layers = [engine.resolve_key_layer(parse_key_layer(x)) for x in args.key_layers.split(",")]
        indexing_throughput(engine, docs, corpus, tmp / "store", layers, args.rounds)
        rng = np.random.default_rng(0)  # one sequence for the recall queries and the synthetic store, in this order
        vector_recall(engine, docs, rng)
        if args.synthetic > 0:
            search_latency(args, args.synthetic_dim or engine.n_embd, tmp, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def indexing_throughput(engine: Engine, docs: list[np.ndarray], corpus: Path, store_dir: Path, layers: list,
                        rounds: int) -> None:
    """Raw prefill and indexing, interleaved over `rounds` rounds (the machine drifts; each round's
    ratio compares neighbours in time), each indexing into a fresh store; then that store's size."""
    from sense_local.datastore import DocumentStore, index_paths
    from sense_local.datastore.indexer import OVERLAP, WINDOW

    ratios = {x: [] for x in layers}
    print(f"corpus: {len(docs)} pydoc topics, {sum(len(d) for d in docs)} tokens; window {WINDOW}, overlap {OVERLAP}")
    for r in range(rounds):
        raw = raw_prefill_rate(engine, docs, WINDOW)
        for x in layers:
            engine.use_key_layer(x)
            shutil.rmtree(store_dir, ignore_errors=True)
            report = index_paths(engine, store_dir, [corpus], commit_every=1e9)
            ratios[x].append(report.tok_per_s / raw)
            print(f"round {r + 1}: keys of {layer_name(x)}: indexing {report.tok_per_s:.1f} tok/s end to end = "
                  f"{report.tok_per_s / raw:.2f}x raw prefill ({raw:.1f} tok/s); model pass "
                  f"{report.eval_seconds / report.seconds:.0%} of the time", flush=True)
    for x in layers:
        print(f"keys of {layer_name(x)}: indexing / raw prefill, median of {rounds} rounds: "
              f"{statistics.median(ratios[x]):.2f}x")
    store = DocumentStore.open(store_dir)
    print(f"store: {store.n_vectors} vectors, {store.disk_bytes() / store.n_vectors:.0f} bytes/token on disk, "
          f"{store.index.memory_usage / store.n_vectors:.0f} bytes/token in memory (index, loaded)")


def vector_recall(engine: Engine, docs: list[np.ndarray], rng: np.random.Generator) -> None:
    """Recall of the true next token by vector type (and PCA-reduced), then by search breadth."""
    from sense_local.datastore.indexer import document_keys
    from sense_local.datastore.store import DEFAULT_DTYPE

    vecs = np.concatenate([document_keys(engine, d) for d in docs])
    nxt = np.concatenate([d[1:] for d in docs])
    queries = rng.choice(len(vecs), size=min(2000, len(vecs)), replace=False)
    mean = vecs.mean(0)
    _, _, vt = np.linalg.svd(vecs[rng.choice(len(vecs), min(8000, len(vecs)), replace=False)] - mean,
                             full_matrices=False)
    variants = [("f32", vecs, "f32"), ("f16", vecs, "f16"), ("i8", vecs, "i8")]
    for dim in (256, 128):
        variants.append((f"f16 pca{dim}", (vecs - mean) @ vt[:dim].T, "f16"))
    print(f"\nnext-token recall@8 over {len(queries)} positions (self excluded):")
    base = None
    for label, v, dt in variants:
        recall, mem = next_token_recall(np.ascontiguousarray(v, np.float32), nxt, dt, queries)
        base = base or recall
        print(f"  {label:<10} recall@8 {recall:.3f} ({recall / base:.3f} of f32), {mem:.0f} bytes/vector in memory")

    print(f"\nsearch breadth ({DEFAULT_DTYPE}): next-token recall@8 and overlap with the exact 8 nearest")
    for ef, recall, overlap in search_breadth(vecs, nxt, DEFAULT_DTYPE, queries):
        print(f"  expansion_search {ef:>2}: recall@8 {recall:.3f}, exact-neighbour overlap {overlap:.3f}")


def search_latency(args, dim: int, tmp: Path, rng: np.random.Generator) -> None:
    """Search latency on a large synthetic store (one query at a time, as while decoding), built as
    the document store builds its index (same metric and vector type)."""
    from sense_local.datastore.store import DEFAULT_DTYPE, SEARCH_BREADTH

    usearch = native.load_usearch()
    path = Path(args.synthetic_file) if args.synthetic_file else tmp / "synthetic.usearch"
    if path.exists():
        build = "reused"
    else:
        index = usearch.Index(ndim=dim, metric="cos", dtype=DEFAULT_DTYPE)
        t0 = time.perf_counter()
        block = 100_000
        for s in range(0, args.synthetic, block):
            n = min(block, args.synthetic - s)
            index.add(np.arange(s, s + n, dtype=np.uint64), rng.standard_normal((n, dim), dtype=np.float32))
        build = f"built in {time.perf_counter() - t0:.0f} s"
        index.save(str(path))
        del index
    view = usearch.Index.restore(str(path), view=True)
    qs = rng.standard_normal((500, dim), dtype=np.float32)
    print(f"\nsynthetic store: {len(view)} x {view.ndim} {view.dtype} ({build}), {path.stat().st_size / 1e9:.2f} GB; "
          "search k=8, one query at a time (memory-mapped view):")
    for breadth in dict.fromkeys((SEARCH_BREADTH, 64)):
        view.expansion_search = breadth
        lat = []
        for q in qs:
            t = time.perf_counter()
            view.search(q[None, :], 8)
            lat.append(time.perf_counter() - t)
        lat.sort()
        label = " (the store's)" if breadth == SEARCH_BREADTH else ""
        print(f"  expansion_search {breadth}{label}: p50 {statistics.median(lat) * 1e3:.3f} ms, "
              f"p90 {lat[int(0.9 * len(lat))] * 1e3:.3f} ms")


if __name__ == "__main__":
    raise SystemExit(main())
