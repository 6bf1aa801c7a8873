"""Two methods alternated on the same quick-suite prompts, in one process: each run's decode speed
and where a token's time goes (drafting, the verifying decode, the rest), so a few percent between
two methods at the same tau can be told from the machine's drift (the order flips every run).

    python -m benchmarks.alternate_methods --model default --kinds qa,translate,math,summary --methods pld,sense --rounds 2
"""
from __future__ import annotations

import argparse
import statistics

from sense_local.bench.runner import run_method
from sense_local.bench.tasks import build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.registry import resolve_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--kinds", default="qa,translate,math,summary")
    ap.add_argument("--methods", default="pld,sense", help="two methods, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    if len(methods) != 2:
        ap.error("--methods takes two methods")
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    prompts = [chat_tokens(engine, t.messages()) for t in build_tasks("quick") if t.kind in args.kinds.split(",")]
    totals = {m: dict(tokens=0, forwards=0, draft=0.0, verify=0.0, total=0.0) for m in methods}
    ratios = []
    for r in range(args.rounds):
        for i, prompt in enumerate(prompts):
            speed = {}
            for method in methods if (r + i) % 2 == 0 else methods[::-1]:
                engine.prefill(prompt, outputs="keys", with_keys=True)  # as the suite does: the prompt's states cached
                _, s = run_method(engine, prompt, method, args.tokens, store=None, free_verification=False)
                t = totals[method]
                t["tokens"] += s.tokens - 1  # after the first, as tok/s counts
                t["forwards"] += s.forwards
                t["draft"] += s.t_draft
                t["verify"] += s.t_verify
                t["total"] += s.t_total
                speed[method] = s.tok_per_s
            if all(speed.values()):
                ratios.append(speed[methods[1]] / speed[methods[0]])
    for method, t in totals.items():
        n = max(t["tokens"], 1)
        print(f"{method:10s} {n / t['total']:.2f} tok/s; per token: draft {1000 * t['draft'] / n:.3f} ms, verify "
              f"{1000 * t['verify'] / n:.2f} ms, other {1000 * (t['total'] - t['draft'] - t['verify']) / n:.3f} ms; "
              f"a verifying decode {1000 * t['verify'] / max(t['forwards'], 1):.2f} ms")
    if ratios:
        print(f"{methods[1]} / {methods[0]} tok/s per run: median {statistics.median(ratios):.3f} of {len(ratios)} runs")
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
