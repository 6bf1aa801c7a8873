"""What a verification costs the one-token decode after it: llama.cpp reuses a decode's graph for the
next decode of the same shape, so plain decoding (one-token decodes back to back) builds its graph
once, and every decode of another size makes the next one-token decode build it again.

Per rep, after `--context` filler tokens, interleaved: a one-token decode after another (the unit),
a k-row decode after a one-token one, the one-token decode right after it; medians in ms, and what
the one after a k-row decode pays over the unit. On the 135M here: 6.60 ms after a one-token
decode, 7.00-7.16 ms after a 2- to 64-row one (+0.41-0.56 ms, 6-8% of a decode: every verification
of a draft pays that on top of its own decode); on the 1.5B 28.3 ms, and -0.3 to +1.5 ms after one
(within its noise, 8 reps).

    python -m benchmarks.graph_reuse --model test --sizes 2,8,16,64 --reps 15
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sense_local.engine import Engine
from sense_local.registry import resolve_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="test")
    ap.add_argument("--sizes", default="2,8,16,64")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--context", type=int, default=128)
    args = ap.parse_args(argv)
    sizes = [int(k) for k in args.sizes.split(",")]
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    filler = np.random.default_rng(0).integers(100, min(engine.n_vocab, 20000), size=args.context + max(sizes))
    at = args.context
    engine.eval(filler[:at], 0, outputs="last", with_keys=False)

    def timed(k: int) -> float:
        t0 = time.perf_counter()
        out = engine.eval(filler[at : at + k], at, outputs="all" if k > 1 else "last", with_keys=False)
        out.logits[-1].argmax()
        return (time.perf_counter() - t0) * 1000

    unit: list[float] = []
    own = {k: [] for k in sizes}
    after = {k: [] for k in sizes}
    timed(1)  # the one-token graph; from then on each size's first decode follows a one-token one
    for _ in range(args.reps):
        for k in sizes:
            unit.append(timed(1))
            own[k].append(timed(k))
            after[k].append(timed(1))
    one = statistics.median(unit)
    print(f"{engine.path.name}, {engine.n_threads} threads, {args.context} tokens of context, {args.reps} reps (medians):")
    print(f"  one-token decode after a one-token decode: {one:.3f} ms")
    for k in sizes:
        a = statistics.median(after[k])
        print(f"  {k:3d}-row decode {statistics.median(own[k]):8.3f} ms; the one-token decode after it {a:.3f} ms "
              f"({a - one:+.3f} ms, {a / one:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
