"""Predicted Outputs replayed without timing noise: `ar`'s replies to predicted_edits.py's ten edits
are recorded once (the 1.5B: ~3 min), then `ar` + prediction, `pld` + prediction and `pld` are replayed
on them as replay_bench.py replays (a draft is accepted where it matches the recording; a run's time
is the sum of c(decode size)), on the recorded cost curve or on one given with --curve: another
machine's, e.g. the Intel VM's (cost.PRIOR, `--curve intel`). Beside them, on the same curve, the
costed oracles of copy_ceiling.py: copying from the prompt and the prediction (knows where to copy
from, not the edits) and copying the reply from itself (knows every edit).

    python -m benchmarks.replay_predicted --outputs /tmp/pred.json [--curve intel | --curve 2:1.5,4:1.9,...]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.predicted_edits import EDITS, edit_prompt, source_span
from benchmarks.replay_bench import ReplayEngine, recorded_reply, replayed_events
from sense_local.bench.copy_ceiling import costed_ceiling
from sense_local.engine import Engine
from sense_local.generation import prompt_tokens
from sense_local.registry import resolve_model
from sense_local.speculative.cost import PRIOR, CostCurve, cost_curve_for
from sense_local.speculative.loop import MAX_DRAFT, SpecDecoder
from sense_local.speculative.methods import get_method
from sense_local.speculative.speculator import Speculator

MAX_TOKENS = 256  # predicted_edits.py's
RUNS = (("ar+prediction", "ar", True), ("pld+prediction", "pld", True), ("pld", "pld", False))


def record(engine: Engine, path: Path) -> dict:
    tasks = []
    for module, first, instruction in EDITS:
        text, prediction = edit_prompt(source_span(module, first), instruction)
        task = recorded_reply(engine, module, "edit", prompt_tokens(engine, text), MAX_TOKENS)
        tasks.append(task | {"prediction": prediction})
    data = {"tasks": tasks, "curve": cost_curve_for(engine, measure=True).to_dict()}
    path.write_text(json.dumps(data))
    return data


def parse_curve(text: str) -> CostCurve:
    """`intel` (cost.PRIOR) or `k:c,...` (c(1) = 1 is implied)."""
    if text == "intel":
        return PRIOR
    try:
        points = sorted({1: 1.0} | {int(k): float(c) for k, c in (p.split(":") for p in text.split(","))}.items())
    except ValueError:
        raise SystemExit(f"--curve: expected 'intel' or 'k:c,k:c,...' (got {text!r})") from None
    return CostCurve(tuple(k for k, _ in points), tuple(c for _, c in points))


def replayed_speed(task: dict, method: str, prediction: str | None, curve: CostCurve, vocab: Engine) -> tuple[float, float]:
    """(modeled speed over one-token decoding, tau) of `method` with `prediction` on the recorded reply."""
    engine = ReplayEngine.of_task(task, vocab=vocab)
    drafter = Speculator(engine, None, remember_cost=False).drafter_for(get_method(method), prediction)
    decoder = SpecDecoder(engine, method=method, drafter=drafter, cost=curve)
    n = len(replayed_events(task, decoder, MAX_TOKENS))
    return (n - 1) / sum(curve.cost(k) for k in engine.decodes), n / decoder.stats.forwards


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--outputs", type=Path, required=True, help="recorded replies (made if missing)")
    ap.add_argument("--curve", help="price decodes on this curve: 'intel' or 'k:c,...' (default: the recorded one)")
    args = ap.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    data = json.loads(args.outputs.read_text()) if args.outputs.exists() else record(engine, args.outputs)
    curve = parse_curve(args.curve) if args.curve else CostCurve(tuple(data["curve"]["lengths"]),
                                                                 tuple(data["curve"]["costs"]))
    longest = min(MAX_DRAFT, curve.lengths[-1] - 1)  # past the curve's end nothing is priced: drafts stop there
    speeds: dict[str, list[float]] = {}
    for task in data["tasks"]:
        cells = []
        for name, method, predicted in RUNS:
            speed, tau = replayed_speed(task, method, task["prediction"] if predicted else None, curve, engine)
            speeds.setdefault(name, []).append(speed)
            cells.append(f"{name} {speed:.2f}x (tau {tau:.1f})")
        prediction = engine.tokenize(task["prediction"], add_special=False)
        oracles = {"oracle: copy prompt+prediction": costed_ceiling(task["prompt"], task["output"], curve.effective,
                                                                    [prediction], max_draft=longest),
                   "oracle: the reply itself": costed_ceiling([], task["output"], curve.effective, [task["output"]],
                                                              max_draft=longest)}
        for name, speed in oracles.items():
            speeds.setdefault(name, []).append(speed)
            cells.append(f"{name.split(': ')[1]} {speed:.2f}x")
        print(f"{task['name']:9s} " + ", ".join(cells))
    print(f"geometric mean over one-token decoding ({len(data['tasks'])} edits, curve c(2) {curve.cost(2):.2f}, "
          f"c(16) {curve.cost(16):.2f}, c({curve.lengths[-1]}) {curve.costs[-1]:.2f}):")
    for name, values in speeds.items():
        print(f"  {name:32s} {statistics.geometric_mean(values):.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
