"""Which layer's states should key the document store: indexing speed against neighbour quality.

For each candidate layer l, the hidden pass stops the forward pass at block l's normalized input
(`attn_norm-l`; "final" is the output norm the LM head reads) and the same documents' states are
read. Side by side in one run, interleaved per round: plain prefill (the floor: every block, LM head
on the last row only), and each layer's pass. Then, per layer, next-token agreement of neighbours:
the fraction of positions whose true next token is among the next tokens of their 8 nearest other
positions (the store's own index type, i8 cosine).

    python -m benchmarks.key_layer_bench --model qwen2.5-coder-1.5b-instruct-q4_k_m --layers 7,14,18,21,24,final
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from sense_local.engine import Engine
from sense_local.hidden_pass import HiddenPass
from sense_local.registry import resolve_model


def _windows(docs: list[np.ndarray], window: int, overlap: int):
    """The indexer's windows: (run, first kept row) for every document."""
    for tokens in docs:
        n = len(tokens) - 1
        start = 0
        while start < n:
            ctx = 0 if start == 0 else overlap
            end = min(start + window - ctx, n)
            yield tokens[start - ctx : end], ctx
            start = end


def layer_states(hp: HiddenPass, docs: list[np.ndarray], window: int, overlap: int) -> tuple[np.ndarray, float]:
    """([positions, n_embd] states of every position that predicts a token, seconds)."""
    t0 = time.perf_counter()
    rows = [hp.run(run)[ctx:] for run, ctx in _windows(docs, window, overlap)]
    return np.concatenate(rows), time.perf_counter() - t0


def prefill_seconds(engine: Engine, docs: list[np.ndarray], window: int, overlap: int) -> float:
    t0 = time.perf_counter()
    for run, _ in _windows(docs, window, overlap):
        engine.eval(run, 0, outputs="last", with_keys=False)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--layers", default="7,14,18,21,24,final", help="comma-separated block numbers, or final")
    ap.add_argument("--topics", type=int, default=6, help="pydoc topics to read (default 6)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", default="", help="also time the pass of the first layer at these n_batch (= n_ubatch) sizes")
    args = ap.parse_args(argv)

    from pydoc_data.topics import topics

    from benchmarks.store_bench import next_token_recall
    from sense_local.datastore.indexer import OVERLAP, WINDOW

    engine = Engine(resolve_model(args.model), n_ctx=4096)
    n_layer = engine.info.n_layer
    layers = [None if x == "final" else int(x) for x in args.layers.split(",")]
    bad = [x for x in layers if x is not None and not 0 < x < n_layer]
    if bad:
        raise SystemExit(f"layers must be 1..{n_layer - 1} or final (got {bad})")
    names = sorted((t for t in topics if 2000 <= len(topics[t]) <= 6000), key=lambda t: -len(topics[t]))[: args.topics]
    docs = [np.asarray(engine.tokenize(topics[n]), np.int32) for n in names]
    n_tokens = sum(len(d) for d in docs)
    passes = {x: HiddenPass(engine._model, engine.n_embd, n_ctx=WINDOW, n_batch=engine.n_batch,
                            n_threads=engine.n_threads, layer=x) for x in layers}
    for x, hp in passes.items():
        if not hp.available:
            raise SystemExit(f"layer {x}: the graph callback found no {x} tensor in this model")
    prefill = []
    seconds = {x: [] for x in layers}
    states = {}
    for _ in range(args.rounds):
        prefill.append(prefill_seconds(engine, docs, WINDOW, OVERLAP))
        for x, hp in passes.items():
            states[x], s = layer_states(hp, docs, WINDOW, OVERLAP)
            seconds[x].append(s)
    nxt = np.concatenate([d[1:] for d in docs])
    queries = np.random.default_rng(0).choice(len(nxt), size=min(2000, len(nxt)), replace=False)
    base = min(prefill)
    batch_seconds = {}
    for b in [int(x) for x in args.batches.split(",") if x]:
        hp = HiddenPass(engine._model, engine.n_embd, n_ctx=WINDOW, n_batch=b, n_threads=engine.n_threads, layer=layers[0])
        batch_seconds[b] = min(layer_states(hp, docs, WINDOW, OVERLAP)[1] for _ in range(args.rounds))
        hp.close()
    print(f"{engine.path.name}: {n_layer} blocks; {len(names)} pydoc topics, {n_tokens} tokens; window {WINDOW}; "
          f"best of {args.rounds} interleaved rounds")
    print(f"plain prefill: {n_tokens / base:.1f} tok/s")
    print("| layer | pass tok/s | cost vs prefill | next-token agreement@8 (i8) |")
    print("|---|---|---|---|")
    for x in layers:
        s = min(seconds[x])
        agree, _ = next_token_recall(np.ascontiguousarray(states[x]), nxt, "i8", queries)
        print(f"| {'final' if x is None else x} | {n_tokens / s:.1f} | {s / base:.2f}x | {agree:.3f} |")
    for b, s in batch_seconds.items():
        print(f"n_batch {b}: the pass of layer {layers[0]} at {n_tokens / s:.1f} tok/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
