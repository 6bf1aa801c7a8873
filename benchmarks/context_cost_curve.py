"""The cost curve after longer contexts: `measure_cost_curve` (what `bench` measures after 128 tokens)
after each context length given, and the one-token decode's milliseconds there, so a decode of k rows
is read both as c(k) and in ms. A verification's attention reads the whole context for each of its
rows: after 1,000-2,000 tokens it decides what a draft costs.

With `--ab NAME=V1,V2` the measure runs in child processes that alternate the environment variable
NAME between the two values (V1, V2, V2, V1, ... `--rounds` of each) and the k-row decodes' ms under
V2 over V1 are printed (medians): how the llama.cpp patch `fa-tiled-small` (scripts/llama_patches.py)
was measured, `--ab SENSE_FA_TILED_MIN=64,8`.

    python -m benchmarks.context_cost_curve --model default --contexts 128,1536 --ab SENSE_FA_TILED_MIN=64,8
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SIZES = (2, 4, 8, 16, 32, 64)


def measure_here(model: str, contexts: list[int], reps: int) -> dict:
    """{context: {"one_ms": the one-token decode's ms, "c": {k: c(k)}}} in this process."""
    import numpy as np

    from sense_local.engine import Engine
    from sense_local.registry import resolve_model
    from sense_local.speculative.cost import measure_cost_curve

    engine = Engine(resolve_model(model), n_ctx=max(contexts) + 128)
    filler = (np.arange(max(contexts)) * 7919 % 20000 + 100).astype(np.int32)  # as the probe's: any tokens
    out = {}
    for context in contexts:
        curve = measure_cost_curve(engine, reps=reps, context=context)
        engine.eval(filler[:context], 0, outputs="last", with_keys=False)
        ones = []
        for _ in range(10):
            t0 = time.perf_counter()
            engine.eval(filler[:1], context, outputs="last", with_keys=False)
            ones.append(time.perf_counter() - t0)
        engine.truncate(0)
        costs = dict(zip(curve.lengths, curve.costs))
        out[context] = {"one_ms": 1e3 * min(ones), "c": {k: costs[k] for k in SIZES if k in costs}}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--contexts", default="128,512,1536", help="context lengths, comma-separated")
    p.add_argument("--reps", type=int, default=3, help="the probe's reps (the quickest counts)")
    p.add_argument("--ab", help="NAME=V1,V2: alternate child processes with the variable at each value")
    p.add_argument("--rounds", type=int, default=2, help="--ab: processes per value")
    args = p.parse_args(argv)
    contexts = [int(c) for c in args.contexts.split(",")]
    if not args.ab:
        print(json.dumps(measure_here(args.model, contexts, args.reps)))
        return 0
    name, _, values = args.ab.partition("=")
    values = values.split(",")
    if not name or len(values) != 2:
        print("context_cost_curve: --ab wants NAME=V1,V2", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {v: [] for v in values}
    for r in range(args.rounds):
        for v in values if r % 2 == 0 else values[::-1]:
            done = subprocess.run([sys.executable, "-m", "benchmarks.context_cost_curve", "--model", args.model,
                                   "--contexts", args.contexts, "--reps", str(args.reps)],
                                  env=dict(os.environ, **{name: v}), capture_output=True, text=True, check=True)
            runs[v].append(json.loads(done.stdout.strip().splitlines()[-1]))
    a, b = values
    print(f"{args.model}: a k-row decode's ms with {name}={b} over {name}={a} (medians of {args.rounds} "
          f"processes each); c(k) {a} -> {b}")
    for context in map(str, contexts):
        def ms(v, k):
            return statistics.median(run[context]["one_ms"] * run[context]["c"][str(k)] for run in runs[v])

        def c(v, k):
            return statistics.median(run[context]["c"][str(k)] for run in runs[v])

        one = statistics.median(r[context]["one_ms"] for r in runs[b]) / statistics.median(r[context]["one_ms"] for r in runs[a])
        cells = "  ".join(f"{k}: {ms(b, k) / ms(a, k):.2f}x ({c(a, k):.2f}->{c(b, k):.2f})" for k in SIZES
                          if str(k) in runs[a][0][context]["c"])
        print(f"after {context:>5s} tokens  1: {one:.2f}x  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
