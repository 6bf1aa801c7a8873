"""`sense-local curve`: this machine's decode cost curve for a model, shown, or measured and kept.

Every draft is sized by it (cost.py): c(k), what a k-token decode costs in one-token decodes. Replies
start from the curve kept for the model, its thread count and llama.cpp here: measured on purpose
(`bench`, this command), else learned from replies' own decodes, which only scale PRIOR's shape. A
measured curve also knows the sizes ggml's CPU kernels tile well (on the AMD EPYC here the 1.5B's
c(16) is 8.0 against c(15) 10.0), which the loop pads decodes to: replayed on the 1.5B's recorded
outputs, drafts sized by the learned, scaled prior lost 4-7% on code edits and 2-3% on grounded and
chat replies against the measured curve. `scripts/run` measures the chat's model's once.
"""
from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace

from . import plain_layout
from .errors import SenseError

SHOWN = (2, 4, 8, 16, 32, 48, 64)


def cmd_curve(args) -> int:
    from .cli_config import load_engine
    from .engine import default_threads
    from .model_info import read_model_info
    from .registry import resolve_model
    from .speculative.cost import PROBE_LENGTHS, cost_curve_for, curve_source

    path = resolve_model(args.model)
    # the kept curve's key needs no loaded model (a curve measured before is found in milliseconds),
    # but with RPC workers it counts those that took layers: the model is loaded to know them
    engine = load_engine(args) if args.rpc else None
    identity = engine or SimpleNamespace(fingerprint=read_model_info(path).fingerprint,
                                         n_threads=args.threads or default_threads(), n_gpu_layers=args.gpu_layers,
                                         rpc_workers=())
    source = curve_source(identity)
    if source == "flat":
        raise SenseError("SENSE_COST_FLAT is set: every decode is priced as one, no curve is read or kept")
    kept = cost_curve_for(identity)  # the kept one, or PRIOR
    layout = plain_layout.verdict(identity) if args.gpu_layers == 0 and not args.rpc else 0.0
    # a curve measured before drafts could be 63 tokens long stops at 32: measured again, once
    short = kept.lengths[-1] < PROBE_LENGTHS[-1]
    measure = args.measure or (args.if_missing and (source != "measured" or short))
    seconds = 0.0
    layout_found = None  # a verdict measured now (plain_layout.py): with the curve (first: the curve prices
    if measure or (args.if_missing and layout is None):  # decodes where they run), or where it is missing
        engine = engine or load_engine(args)
        layout_found = plain_layout.measure(engine)
    if measure:
        engine = engine or load_engine(args)
        print(f"measuring {path.name}'s decode cost at every size 1..32 and every fourth to 64 on {engine.n_threads} "
              "threads (once; about a minute and a half for a 1.5B model on 2 cores)...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        curve = cost_curve_for(engine, measure=True)
        seconds, source = time.perf_counter() - t0, "measured"
    else:
        curve = kept
    threads = identity.n_threads
    padded = {n: curve.padded(n) for n in range(1, curve.lengths[-1] + 1) if curve.padded(n) != n}
    if args.json:
        print(json.dumps({"model": path.name, "threads": threads, "source": source,
                          "measured_now": measure, "seconds": round(seconds, 1), **curve.to_dict(),
                          "padded": padded, "prompt_layout": layout_found}))
        return 0
    if args.quiet:
        return 0
    costs = ", ".join(f"c({k}) {curve.cost(k):.1f}" for k in SHOWN if k <= curve.lengths[-1])
    print(f"{path.name} on {threads} threads: {costs} ({source}{f', {seconds:.0f} s' if measure else ''})")
    if padded:
        runs = ", ".join(f"{n}->{m}" for n, m in padded.items())
        print(f"decodes run at a cheaper longer size: {runs}")
    if source != "measured":
        print("not measured here: replies learn it as they go (--measure measures it now, about a minute and a half)")
    if layout_found is not None:
        print(plain_layout.describe(layout_found))
    return 0
