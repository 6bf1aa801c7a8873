"""What Predicted Outputs can reach on this machine at all: the edits of `predicted_edits`, each run
with `ar` and then with `ar`'s own reply as the prediction (every draft right: the drafter's sizes
are then limited only by the loop's longest draft and the cost curve). The speed ratio of the two
is the ceiling any prediction can give on that edit here; a bar above it asks for more than the CPU
can verify.

    python -m benchmarks.predicted_ceiling --model default [--edits 10] [--json F]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.predicted_edits import EDITS, edit_bench_parser, edit_prompt, ours, source_span
from sense_local.engine import Engine
from sense_local.generation import prompt_tokens
from sense_local.registry import resolve_model


def main(argv=None) -> int:
    args = edit_bench_parser(__doc__).parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=args.ctx)
    rows = []
    try:
        for module, first, instruction in EDITS[: args.edits]:
            text, _ = edit_prompt(source_span(module, first), instruction)
            prompt = prompt_tokens(engine, text)
            engine.prefill(prompt)
            ref = ours(engine, prompt, "ar", "", args.max_tokens)
            perfect = ours(engine, prompt, "ar", engine.detokenize(ref["tokens"]), args.max_tokens)
            row = {"edit": f"{module}: {instruction}", "ar_tok_per_s": ref["tok_per_s"],
                   "perfect_tok_per_s": perfect["tok_per_s"], "perfect_tau": perfect["tau"],
                   "ratio": perfect["tok_per_s"] / max(ref["tok_per_s"], 1e-9)}
            rows.append(row)
            print(f"{row['edit'][:48]:48s} {row['ratio']:.2f}x (tau {row['perfect_tau']:.1f})", file=sys.stderr)
    finally:
        engine.close()
    geomean = float(np.exp(np.mean(np.log([r["ratio"] for r in rows]))))
    doc = {"rows": rows, "geomean_ratio": round(geomean, 3)}
    print(json.dumps({"geomean_perfect_prediction_vs_ar": round(geomean, 3),
                      "per_edit": [round(r["ratio"], 2) for r in rows]}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
