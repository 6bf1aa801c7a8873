"""c(k) as the speculative loop pays it, beside the curve `bench` measures.

The quick suite's tasks of the kinds given are decoded with `ar` and with a drafting method, twice;
every `Engine.eval` the loop makes is timed with its size. c(k) is the median time of the k-token
decodes over the median one-token decode of `ar` on the same tasks. Beside it: `measure_cost_curve`
at context 128 (what `bench` uses: the quickest of 7 reps) and at 512. A probe that prices drafts
lower than the loop pays sizes them too long on a steep curve.

    python -m benchmarks.live_cost_curve [--model default] [--kinds code] [--method pld] [--reps 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

from sense_local.bench.tasks import KINDS, build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.speculative.cost import measure_cost_curve


def timed_evals(engine: Engine, times: dict[int, list[float]]):
    """Wrap the engine's eval so every call's seconds go to times[number of tokens] while `on`."""
    plain = engine.eval
    state = {"on": False}

    def eval(tokens, *args, **kwargs):
        t0 = time.perf_counter()
        out = plain(tokens, *args, **kwargs)
        if state["on"]:
            times[len(tokens)].append(time.perf_counter() - t0)
        return out

    engine.eval = eval
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="live_cost_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--kinds", default="code")
    parser.add_argument("--method", default="pld", help="a drafting method without documents (pld, sense)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or set(kinds) - set(KINDS) or "docqa-rag" in kinds:
        parser.error(f"--kinds: choose from {', '.join(k for k in KINDS if k != 'docqa-rag')}")
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    prompts = [chat_tokens(engine, t.messages())
               for t in build_tasks("quick") if t.kind in kinds]
    by_method: dict[str, dict[int, list[float]]] = {"ar": defaultdict(list), args.method: defaultdict(list)}
    for _ in range(args.reps):
        for prompt in prompts:
            for method, times in by_method.items():  # interleaved: drift hits both alike
                engine.prefill(prompt, outputs="keys", with_keys=True)  # as bench does: the prompt's states kept
                decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=args.max_tokens))
                state = timed_evals(engine, times)
                state["on"] = True
                for _ in decoder.generate(prompt, args.max_tokens):
                    pass
                del engine.eval  # the class's own again
                print(f"{method:6s} {len(prompt):4d}-token prompt: tau {decoder.stats.tau:.2f}, "
                      f"{decoder.stats.tok_per_s:.1f} tok/s", flush=True)
    one = statistics.median(by_method["ar"][1])
    print(f"\nar's one-token decode: median {1000 * one:.1f} ms over {len(by_method['ar'][1])}")
    print(f"{args.method}'s decodes, c(k) = median / that (min / that), count:")
    for k, seconds in sorted(by_method[args.method].items()):
        print(f"  k={k:2d}: {statistics.median(seconds) / one:5.2f} ({min(seconds) / one:5.2f}), {len(seconds)}")
    for context in (128, 512):
        curve = measure_cost_curve(engine, context=context)
        print(f"measure_cost_curve(context={context}): "
              + ", ".join(f"c({k}) {c:.2f}" for k, c in zip(curve.lengths, curve.costs)))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
