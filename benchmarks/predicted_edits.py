"""Predicted Outputs on code edits (`scripts/bench_predicted`): the model rewrites a real Python file
(40-150 lines of the standard library) with one edit asked for, and the file itself is the
prediction. Decode tok/s of `ar`, `ar` + prediction, `pld`, `pld` + prediction, and llama-server
(plain and `--spec-type ngram-mod`, which has no prediction input) on the same prompts, one request at
a time, interleaved per edit; text compared with `ar`'s (identical, or the top-2 gap where they part).
With --ceiling, also `ar` with the reply itself as the prediction (`ar`'s, or where a run verified in
batches parts from it at a near-tie, that run's own): every draft right, the ceiling any prediction
can give on that edit on this machine, measured beside the others. And two oracles priced on the
engine's cost curve (copy_ceiling.costed_ceiling, no model run), for what the file as the
prediction can give: one copying `ar`'s reply from the prompt and the prediction (it knows where
to copy from but not the edits), one copying the reply from itself (it knows the edits too).
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np

from sense_local.bench.copy_ceiling import costed_ceiling
from sense_local.bench.runner import first_divergence
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder, prompt_tokens
from sense_local.registry import resolve_model
from sense_local.speculative.cost import cost_curve_for

ORACLES = "oracles"  # a row's modeled figures (not a run)

# (module, where the span starts, the edit): whole top-level definitions from there, 40-150 lines
EDITS = [
    ("colorsys", "def rgb_to_hls", "Rename the variables maxc and minc to high and low."),
    ("textwrap", "def dedent", "Rename the variable margin to common_prefix."),
    ("shlex", "def split", "Add a one-line docstring to every function that has none."),
    ("fnmatch", "def fnmatch", "Rename the parameter pat to pattern everywhere."),
    ("bisect", "def insort_right", "Rename the parameters lo and hi to low and high."),
    ("heapq", "def heappush", "Change every comment to start with '# NOTE:'."),
    ("glob", "def glob(", "Rename the parameter root_dir to base_dir everywhere."),
    ("string", "class Formatter", "Add a one-line docstring to every method that has none."),
    ("calendar", "def isleap", "Rename the parameter year to yr everywhere."),
    ("copy", "def copy(", "Rename the variable cls to klass everywhere."),
]
MIN_LINES, MAX_LINES = 40, 150


def source_span(module: str, first: str) -> str:
    """The module's source from `first` to the first top-level definition after MIN_LINES lines."""
    text = Path(inspect.getsourcefile(__import__(module))).read_text()
    lines = text[text.index(first):].split("\n")
    end = next((i for i in range(MIN_LINES, min(len(lines), MAX_LINES))
                if lines[i].startswith(("def ", "class ", "@"))), min(len(lines), MAX_LINES))
    return "\n".join(lines[:end]).rstrip() + "\n"


def edit_prompt(code: str, instruction: str) -> tuple[str, str]:
    prompt = f"{instruction} Reply with the whole code only, in one code block.\n```python\n{code}```"
    return prompt, f"```python\n{code}```"


def ours(engine: Engine, prompt: list[int], method: str, prediction: str, max_tokens: int) -> dict:
    options = GenerationOptions(method=method, max_tokens=max_tokens, prediction=prediction)
    decoder = make_decoder(engine, options, record_gaps=True)
    tokens = [ev.token for ev in decoder.generate(prompt, max_tokens)]
    s = decoder.stats
    return {"tokens": tokens, "tok_per_s": s.tok_per_s, "tau": s.tau, "gaps": s.top2_gaps,
            "accepted_prediction": s.prediction_accepted, "rejected_prediction": s.prediction_rejected}


def ceiling(engine: Engine, prompt: list[int], reply: list[int], max_tokens: int, tries: int = 3) -> tuple[dict, int]:
    """`ar` with a prediction that is the reply itself: every draft right. A run verified in batches
    can part from one-token decoding at a near-tie (heapq's edit parts from `ar` at token 46, top-2
    gap 0.07), and after that `ar`'s reply predicts nothing; so the prediction becomes the run's own
    reply until a run follows its prediction to the end (tries at most). (the last run, tries)"""
    reply = [t for t in reply if t >= 0]
    for n in range(1, tries + 1):
        r = ours(engine, prompt, "ar", engine.detokenize(reply), max_tokens)
        own = [t for t in r["tokens"] if t >= 0]
        if own == reply:
            break
        reply = own
    return r, n


def figures(ref: dict, r: dict) -> dict:
    """A run's row entry: speed, tau, its text against `ar`'s (`ref`), the prediction's counts."""
    return {"tok_per_s": r["tok_per_s"], "tau": r["tau"], "text": same_as(ref, r["tokens"]),
            "accepted_prediction": r["accepted_prediction"], "rejected_prediction": r["rejected_prediction"]}


def same_as(ref: dict, tokens: list[int]) -> str:
    at = first_divergence(ref["tokens"], tokens)
    if at is None:
        return "identical"
    gap = ref["gaps"][at] if at < len(ref["gaps"]) else float("nan")
    return f"parts at {at} (gap {gap:.2f})"


def run(args) -> dict:
    path = resolve_model(args.model)
    engine = Engine(path, n_ctx=args.ctx)
    peers = {}
    if args.peers:
        from sense_local.bench.llama_server import LlamaServerPeer, server_binary

        binary = server_binary()
        peers = {name: LlamaServerPeer(binary, path, spec_type=spec, n_ctx=args.ctx, n_threads=engine.n_threads)
                 for name, spec in (("llama-server", None), ("llama-server ngram-mod", "ngram-mod"))}
    rows = []
    curve = cost_curve_for(engine) if args.ceiling else None
    try:
        for module, first, instruction in EDITS[: args.edits]:
            code = source_span(module, first)
            text, prediction = edit_prompt(code, instruction)
            prompt = prompt_tokens(engine, text)
            row = {"edit": f"{module}: {instruction}", "lines": code.count("\n"), "prompt_tokens": len(prompt),
                   "prediction_tokens": len(engine.tokenize(prediction, add_special=False))}
            engine.prefill(prompt)  # the prompt's KV is shared by our four runs: decode timed alone
            ref = ours(engine, prompt, "ar", "", args.max_tokens)
            row["ar"] = {"tok_per_s": ref["tok_per_s"], "tokens": len(ref["tokens"])}
            runs = [("ar+prediction", "ar", prediction), ("pld", "pld", ""), ("pld+prediction", "pld", prediction)]
            for name, method, pred in runs:
                row[name] = figures(ref, ours(engine, prompt, method, pred, args.max_tokens))
            if args.ceiling:
                r, tries = ceiling(engine, prompt, ref["tokens"], args.max_tokens)
                row["ar+own reply"] = figures(ref, r) | {"tries": tries}
                reply = [t for t in ref["tokens"] if t >= 0]
                row[ORACLES] = {
                    "copy prompt+prediction": costed_ceiling(prompt, reply, curve.effective,
                                                             [engine.tokenize(prediction, add_special=False)]),
                    "own reply": costed_ceiling([], reply, curve.effective, [reply])}
            for name, peer in peers.items():
                if name.endswith("ngram-mod"):
                    peer.restart()  # its pool must not hold this edit's earlier answer
                r = peer.run(prompt, args.max_tokens)
                row[name] = {"tok_per_s": r.tok_per_s, "text": same_as(ref, r.tokens), "error": r.error}
            rows.append(row)
            print(f"{row['edit'][:48]:48s} " + " ".join(
                f"{k} {row[k]['tok_per_s'] / max(row['ar']['tok_per_s'], 1e-9):.2f}x"
                for k in row if isinstance(row[k], dict) and k not in ("ar", ORACLES)), file=sys.stderr)
    finally:
        for peer in peers.values():
            peer.close()
        engine.close()
    return {"model": str(path.name), "max_tokens": args.max_tokens, "rows": rows, "summary": summary(rows)}


def summary(rows: list[dict]) -> dict:
    names = [k for k in rows[0] if isinstance(rows[0][k], dict) and k not in ("ar", ORACLES)] if rows else []
    out = {}

    def geomean_of(values) -> float:
        return round(float(np.exp(np.mean(np.log(np.maximum(values, 1e-9))))), 3)

    def geomean(name: str, base: str) -> float:
        return geomean_of([r[name]["tok_per_s"] / r[base]["tok_per_s"] for r in rows if r[base]["tok_per_s"] > 0])

    for name in names:
        out[name] = {"geomean_vs_ar": geomean(name, "ar"),
                     "identical": sum(r[name].get("text") == "identical" for r in rows)}
        if "llama-server" in rows[0]:
            out[name]["geomean_vs_llama_server"] = geomean(name, "llama-server")
    for oracle in rows[0].get(ORACLES, {}) if rows else ():
        out[f"modeled: {oracle}"] = {"geomean_vs_ar": geomean_of([r[ORACLES][oracle] for r in rows])}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--edits", type=int, default=len(EDITS))
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--no-peers", dest="peers", action="store_false", help="leave llama-server out")
    ap.add_argument("--ceiling", action="store_true",
                    help="also run ar with the reply itself as the prediction (the ceiling, in the same run)")
    args = ap.parse_args(argv)
    t0 = time.time()
    results = run(args)
    results["seconds"] = round(time.time() - t0)
    print(json.dumps(results["summary"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
