"""One-token greedy decodes on bare llama.cpp contexts of one process (`llama_decode` + argmax, no
engine around them), rotated: tok/s per context, and how much of the process's anonymous memory
sits in huge pages. Comparing two llama.cpp builds means running this once per build's venv,
alternated, in new processes (what a build changes is fixed for a process's life):

    python -m benchmarks.bare_decode --model default --contexts 1 --reps 3 --tokens 64
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import numpy as np

from benchmarks.prefill_contexts import RawContext
from sense_local import native
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.registry import resolve_model
from sense_local.tree_layout import MAX_BRANCHES, TREE_SEQ0

llama_cpp = native.llama_cpp
PROMPT = "Explain how a hash table works, with an example in Python."


def greedy_run(ctx: RawContext, prompt: list[int], n_vocab: int, tokens: int) -> float:
    """Prefill `prompt` afresh, then `tokens` one-token decodes: their tok/s."""
    def row() -> np.ndarray:  # [n_vocab] the last decode's logits
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, -1), shape=(n_vocab,))

    ctx.prefill(prompt)
    token, pos = int(row().argmax()), len(prompt)
    t0 = time.perf_counter()
    for _ in range(tokens):
        ctx.batch.fill(np.asarray([token], np.int32), pos)
        ctx.batch.logits[0] = 1
        if llama_cpp.llama_decode(ctx.ctx, ctx.batch.raw) != 0:
            raise RuntimeError("llama_decode failed")
        token, pos = int(row().argmax()), pos + 1
    return tokens / (time.perf_counter() - t0)


def anon_huge_mb() -> int:
    """This process's anonymous memory in transparent huge pages, MB (0 where the kernel says nothing)."""
    try:
        found = re.search(r"AnonHugePages:\s+(\d+)", open(f"/proc/{os.getpid()}/smaps_rollup").read())
    except OSError:
        return 0
    return int(found.group(1)) >> 10 if found else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="test")
    ap.add_argument("--contexts", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=4096, n_threads=2)
    prompt = chat_tokens(engine, [{"role": "user", "content": PROMPT}])
    contexts = [RawContext(engine, TREE_SEQ0 + MAX_BRANCHES, True, 512) for _ in range(args.contexts)]  # shaped as ours
    speeds: list[list[float]] = [[] for _ in contexts]
    for rep in range(args.reps):
        for i in [(rep + j) % len(contexts) for j in range(len(contexts))]:
            speeds[i].append(greedy_run(contexts[i], prompt, engine.n_vocab, args.tokens))
    print(f"one-token decodes, {engine.path.name}, median of {args.reps} rotated reps of {args.tokens} tokens:")
    for i, s in enumerate(speeds):
        print(f"context-{i + 1}  {statistics.median(s):7.1f} tok/s  (min {min(s):.1f}, max {max(s):.1f})")
    print(f"anonymous memory in huge pages: {anon_huge_mb()} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
