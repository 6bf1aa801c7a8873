"""Where a method's decoding time goes on one kind of quick-suite task (`scripts/profile_method`).

For each method: the decoder's own split (draft / verify / other, per generated token), its tau and
tok/s, and a cProfile of the loop (the top functions by own time). Same engine, same prompts, one
method after the other.

    python -m benchmarks.profile_method --model default --kind docqa-rag --methods ar,pld,sense

`--kind` takes several kinds (chat,qa,math); `--top 0` leaves the profiler out, so the split is the
loop's own timing (the profiler slows Python several-fold), with `--reps` passes over the prompts.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats

from sense_local.bench.stores import bench_store, with_retrieval
from sense_local.bench.tasks import build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--kind", default="docqa-rag")
    ap.add_argument("--methods", default="ar,pld,sense")
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--top", type=int, default=12, help="functions listed by own time (0: no profiler)")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    kinds = args.kind.split(",")
    tasks = [t for kind in kinds for t in [t for t in build_tasks("quick") if t.kind == kind][: args.tasks]]
    store = bench_store(engine, "quick") if any(k.startswith("docqa") for k in kinds) else None
    tasks = [with_retrieval(engine, store, t, args.tokens) if t.kind == "docqa-rag" else t for t in tasks]
    prompts = [chat_tokens(engine, t.messages()) for t in tasks]
    for method in args.methods.split(","):
        profile = cProfile.Profile()
        totals = dict(tokens=0, forwards=0, draft=0.0, verify=0.0, total=0.0, drafted=0, accepted=0)
        for prompt in prompts * args.reps:
            engine.prefill(prompt, outputs="keys", with_keys=True)  # as the suite does: prompts' states cached
            decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=args.tokens), store=store)
            if args.top:
                profile.enable()
            for _ in decoder.generate(prompt, args.tokens):
                pass
            profile.disable()
            s = decoder.stats
            totals["tokens"] += s.tokens
            totals["forwards"] += s.forwards
            totals["draft"] += s.t_draft
            totals["verify"] += s.t_verify
            totals["total"] += s.t_total
            totals["drafted"] += s.drafted
            totals["accepted"] += s.accepted
        n = max(totals["tokens"], 1)
        other = totals["total"] - totals["draft"] - totals["verify"]
        print(f"\n== {method}: {totals['tokens']} tokens, tau {totals['tokens'] / max(totals['forwards'], 1):.2f}, "
              f"{(totals['tokens'] - len(prompts) * args.reps) / totals['total']:.2f} tok/s, accepted "
              f"{totals['accepted']}/{totals['drafted']}; per token: draft {1000 * totals['draft'] / n:.3f} ms, "
              f"verify {1000 * totals['verify'] / n:.3f} ms, other {1000 * other / n:.3f} ms")
        if not args.top:
            continue
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
        print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
