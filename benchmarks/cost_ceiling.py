"""What a perfect copying drafter could reach on this machine, per task of a `bench --json` run:
the copy oracle (sense_local/bench/copy_ceiling.py) priced on the run's own measured cost curve,
over `ar`'s recorded output of each task (prompts rebuilt as the bench builds them, docqa-rag's
with passages from the bench store). It tells a bar that asks more than copying can give on this
CPU from a drafter's shortfall. Beside it, a realizable copier modeled on the same outputs and curve
(sense_local/bench/suffix_model.py: the longest suffix match in the prompt and the output so far,
its occurrences' continuations voted): what a drafter that does not know the output gets from the
same copying. Its acceptance table is calibrated on the kind's other tasks (`--calibration kind`: it
knows which kind a reply is, which a runtime does not), or on every other task of the run
(`--calibration all`: one table for every reply, as a runtime would have to keep).

    python -m benchmarks.cost_ceiling RUN.json [--model default] [--calibration kind|all]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sense_local.bench.copy_ceiling import costed_ceiling
from sense_local.bench.stores import bench_store, with_retrieval
from sense_local.bench.suffix_model import calibrate, modeled_speed
from sense_local.bench.tasks import build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.registry import resolve_model
from sense_local.speculative.cost import CostCurve
from sense_local.speculative.rewrap import rewrapped_tokens


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cost_ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `sense-local bench --json` file")
    parser.add_argument("--model", default="default", help="the model that run used")
    parser.add_argument("--calibration", choices=("kind", "all"), default="kind",
                        help="the suffix drafter's acceptance learned from the kind's other tasks, or from every other task")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.run.read_text())
        curve = CostCurve(tuple(data["cost_curve"]["lengths"]), tuple(data["cost_curve"]["costs"]))
        ar_rows = [r for r in data["runs"] if r["method"] == "ar" and r.get("output_ids")]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{args.run} is not a bench --json run with a cost curve and ar's outputs ({exc})")
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    store = bench_store(engine, data["suite"])
    tasks = {t.name: t for t in build_tasks(data["suite"])}
    per_kind: dict[str, list[float]] = {}
    print(f"cost curve c(k): {dict(zip(curve.lengths, curve.costs))}")
    seen = []  # (kind, prompt, output, copy sources): the documents left out (too slow to scan per position)
    for row in ar_rows:
        task = tasks[row["task"]]
        if task.kind == "docqa-rag":
            task = with_retrieval(engine, store, task, data["max_tokens"])
        prompt = chat_tokens(engine, task.messages())
        joined = rewrapped_tokens(engine, prompt) or []
        speed = costed_ceiling(prompt, row["output_ids"], curve.effective, [joined, store.token_array])
        per_kind.setdefault(task.kind, []).append(speed)
        seen.append((task.kind, prompt, row["output_ids"], [joined] if joined else []))
        print(f"{task.name:34s} {speed:5.2f}x ar  (copy ceiling tau {row.get('copy_ceiling')})", flush=True)
    modeled: dict[str, list[float]] = {}
    for i, (kind, prompt, output, sources) in enumerate(seen):
        table = calibrate((p, out, src) for j, (k, p, out, src) in enumerate(seen)
                          if j != i and (k == kind or args.calibration == "all"))
        modeled.setdefault(kind, []).append(modeled_speed(prompt, output, sources, table, curve.effective)[0])
    print(f"{'kind':34s} {'oracle':>7s}  {'suffix drafter (modeled)':>24s}  (medians over ar; calibrated on: {args.calibration})")
    for kind, speeds in per_kind.items():
        print(f"{kind:34s} {statistics.median(speeds):6.2f}x  {statistics.median(modeled[kind]):23.2f}x")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
