"""Fresh prefills of one prompt on several llama.cpp contexts of one process, alternated, beside
llama-server's: the engine's own context (the cancellable path serve and the TUI take), `--contexts`
raw contexts shaped as ours (sequences for trees, one unified KV buffer, n_batch = n_ubatch = 512)
and one shaped as llama-server's (one sequence, n_batch 2048, n_ubatch 512), on the same weights.
Identical contexts differed by their buffers alone: on the 135M here a context read a 1,500-token
prompt at either ~750 or ~820-840 tok/s, the same for its whole life, whichever shape it had: fast
where the CPU backend's work buffer happened to start on a 64-byte line (malloc aligns it to 16).
Our wheel aligns it (scripts/llama_patches.py); llama-server, built without the patch, still draws.

    python -m benchmarks.prefill_contexts --model test --tokens 1500 --reps 8 --contexts 3
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from sense_local import native
from sense_local.bench.llama_server import LlamaServerPeer, server_binary
from sense_local.engine import Engine
from sense_local.registry import resolve_model
from sense_local.tree_layout import MAX_BRANCHES, TREE_SEQ0
from sense_local.token_batch import TokenBatch, context_params

llama_cpp = native.llama_cpp


class RawContext:
    """A bare llama.cpp context on the engine's weights, prefilled in n_batch decodes."""

    def __init__(self, engine: Engine, n_seq: int, unified: bool, n_batch: int):
        p = context_params(n_ctx=engine.n_ctx, n_batch=n_batch, n_threads=engine.n_threads)
        p.n_ubatch, p.n_seq_max, p.kv_unified = 512, n_seq, unified
        self.ctx = llama_cpp.llama_init_from_model(engine._model, p)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch, self.n_batch = TokenBatch(n_batch), n_batch

    def prefill(self, prompt: list[int]) -> None:
        llama_cpp.llama_memory_clear(self.mem, True)
        b = self.batch
        for s in range(0, len(prompt), self.n_batch):
            part = prompt[s : s + self.n_batch]
            b.fill(np.asarray(part, np.int32), s)
            b.logits[: len(part)] = 0
            b.logits[len(part) - 1] = s + len(part) == len(prompt)  # the prompt's last row only
            if llama_cpp.llama_decode(self.ctx, b.raw) != 0:
                raise RuntimeError("llama_decode failed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="test")
    ap.add_argument("--tokens", type=int, default=1500)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--contexts", type=int, default=3, help="raw contexts shaped as ours")
    args = ap.parse_args(argv)
    path = resolve_model(args.model)
    engine = Engine(path, n_ctx=4096, n_threads=2)
    from pydoc_data.topics import topics

    text = "Summarise:\n" + "".join(topics[t] for t in ("assert", "with", "try", "for", "while", "if", "import"))
    prompt = engine.tokenize(text, add_special=True)[: args.tokens]
    server = LlamaServerPeer(server_binary(), path, spec_type=None, n_ctx=engine.n_ctx, n_threads=engine.n_threads)
    server_speeds: list[float] = []

    def by_server() -> None:
        r = server.run(prompt, 1, fresh=True)
        if not r.error and r.prompt_n >= len(prompt) - 1:
            server_speeds.append(r.prompt_tok_per_s)

    def by_engine() -> None:
        engine.reset()
        engine.prefill(prompt, cancel=threading.Event())

    ways = {"engine": by_engine, "llama-server": by_server}
    for i in range(args.contexts):
        context = RawContext(engine, TREE_SEQ0 + MAX_BRANCHES, True, 512)
        ways[f"ours-shape-{i + 1}"] = lambda c=context: c.prefill(prompt)
    server_shape = RawContext(engine, 1, False, 2048)
    ways["server-shape"] = lambda: server_shape.prefill(prompt)
    speeds = {k: [] for k in ways}
    names = list(ways)
    try:
        for f in ways.values():
            f()  # each once first: buffers touched, the server warm
        server_speeds.clear()
        for r in range(args.reps):
            for k in names[r % len(names):] + names[: r % len(names)]:  # the order rotates
                t0 = time.perf_counter()
                ways[k]()
                speeds[k].append(len(prompt) / (time.perf_counter() - t0))
    finally:
        server.close()
    speeds["llama-server"] = server_speeds  # its own prompt tok/s, not our wall time
    ref = statistics.median(server_speeds)
    print(f"fresh prefill of {len(prompt)} tokens, {path.name}, median of {args.reps} rotated reps:")
    for k, v in speeds.items():
        q1, q3 = np.percentile(v, [25, 75])
        print(f"{k:16s} {statistics.median(v):7.1f} tok/s  {statistics.median(v) / ref:.3f}x llama-server  "
              f"(quartiles {q1:.0f}-{q3:.0f})")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
