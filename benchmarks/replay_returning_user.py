"""The returning user (benchmarks/returning_user.py) replayed without timing noise: the model's greedy
replies to the 30 conversations and their key states are recorded once, then each method is
replayed through one speculator whose reply history fills as the conversations go, as the runtime's
does; a run's time is the sum of c(decode size) on the recorded cost curve (replay_bench.py). Per
method, over the last third: modeled speedup over `ar` (geometric mean per conversation), tau, and
drafted / accepted tokens by source; beside it the copying oracle over the prompt and every earlier
reply (copy_ceiling.py), free and costed, and a realizable suffix drafter modeled on the same curve
(suffix_model.py: SuffixDecoding's vote, its acceptance calibrated on the first two thirds).

    python -m benchmarks.replay_returning_user --model default --outputs /tmp/ru.json --methods pld,sense
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.replay_bench import ReplayEngine, recorded_keys, recorded_reply, replayed_events, unreplayable
from sense_local.bench.chat_tasks import RETURNING_USER
from sense_local.bench.copy_ceiling import copy_ceiling, costed_ceiling
from sense_local.bench.suffix_model import calibrate, modeled_speed
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.registry import resolve_model
from sense_local.reply_history import ReplyHistory
from sense_local.speculative.cost import CostCurve, cost_curve_for
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.methods import get_method
from sense_local.speculative.speculator import Speculator

LAST_THIRD = 20  # conversations before the measured ones (returning_user.py's)


def record(engine: Engine, model: str, path: Path) -> dict:
    tasks = [recorded_reply(engine, f"ru-{i}", "returning", chat_tokens(engine, [{"role": "user", "content": q}]))
             for i, q in enumerate(RETURNING_USER)]
    data = {"model": model, "fingerprint": engine.fingerprint, "curve": cost_curve_for(engine, measure=True).to_dict(),
            "tasks": tasks}
    path.write_text(json.dumps(data))
    return data


def replay_pass(method: str, tasks: list[dict], keys: dict, vocab: Engine, curve: CostCurve, history: bool) -> list[dict]:
    """One pass of the 30 conversations through one speculator (with a new history when `history`)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        speculator = Speculator(ReplayEngine.of_task(tasks[0], vocab=vocab), None, remember_cost=False)
        if history:
            speculator.history = ReplyHistory.open(vocab, directory=Path(tmp) / "history")
        try:
            for task in tasks:
                engine = speculator.engine = ReplayEngine.of_task(task, keys=keys[task["name"]], vocab=vocab)
                decoder = SpecDecoder(engine, method=method, drafter=speculator.drafter_for(get_method(method)), cost=curve)
                events = replayed_events(task, decoder)
                output = [e.token for e in events]
                speculator.remember(len(task["prompt"]), output)
                if speculator.history is not None:
                    speculator.history.flush()
                s = decoder.stats
                results.append({"tokens": len(output), "forwards": s.forwards,
                                "time": sum(curve.cost(k) for k in engine.decodes),
                                "drafted": dict(s.drafted_by_source),
                                "accepted": {src: sum(e.source == src for e in events) for src in s.drafted_by_source}})
        finally:
            if speculator.history is not None:
                speculator.history.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="replay_returning_user", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="the model (default: the recording's, else the default model)")
    parser.add_argument("--outputs", type=Path, required=True, help="recorded replies (made if missing)")
    parser.add_argument("--methods", default="pld,sense")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if problem := unreplayable(methods, with_documents=False):
        parser.error(problem)
    data = json.loads(args.outputs.read_text()) if args.outputs.exists() else None
    model = data.get("model", args.model or "default") if data else args.model or "default"
    if data and args.model and args.model != model:
        parser.error(f"{args.outputs} was recorded with --model {model}, not {args.model}")
    vocab = Engine(resolve_model(model), n_ctx=4096)
    if data and data.get("fingerprint", vocab.fingerprint) != vocab.fingerprint:
        parser.error(f"{args.outputs} was recorded with another file than {model} resolves to now")
    data = data or record(vocab, model, args.outputs)
    keys = recorded_keys(vocab, data["tasks"], args.outputs.with_suffix(".keys.npz"))
    curve = CostCurve(tuple(data["curve"]["lengths"]), tuple(data["curve"]["costs"]))
    tasks = data["tasks"]
    last = tasks[LAST_THIRD:]
    earlier = lambda i: [t["output"] for t in tasks[:i]]  # noqa: E731 - the replies before conversation i
    free = [copy_ceiling(t["prompt"], t["output"], earlier(LAST_THIRD + j)) for j, t in enumerate(last)]
    costed = [costed_ceiling(t["prompt"], t["output"], curve.effective, earlier(LAST_THIRD + j)) for j, t in enumerate(last)]
    print(f"cost curve {data['curve']['costs'][:8]}...; last {len(last)} of {len(tasks)} conversations")
    print(f"{'run':28s} {'over ar':>8s} {'tau':>6s}  drafted / accepted by source")
    print(f"{'copying oracle (costed)':28s} {statistics.geometric_mean(costed):7.3f}x {statistics.median(free):6.2f}  (tau: free verification)")
    table = calibrate((t["prompt"], t["output"], earlier(i)) for i, t in enumerate(tasks[:LAST_THIRD]))
    modeled = [modeled_speed(t["prompt"], t["output"], earlier(LAST_THIRD + j), table, curve.cost) for j, t in enumerate(last)]
    print(f"{'suffix drafter (modeled)':28s} {statistics.geometric_mean([m[0] for m in modeled]):7.3f}x "
          f"{statistics.mean([m[1] for m in modeled]):6.2f}  (calibrated on the first {LAST_THIRD})")
    ar = replay_pass("ar", tasks, keys, vocab, curve, False)[LAST_THIRD:]
    runs = [(m, h) for m in methods for h in ((True, False) if m.startswith("sense") else (False,))]
    for method, with_history in runs:
        res = replay_pass(method, tasks, keys, vocab, curve, with_history)[LAST_THIRD:]
        speed = statistics.geometric_mean([(a["time"] / a["tokens"]) / (r["time"] / r["tokens"]) for r, a in zip(res, ar)])
        tau = sum(r["tokens"] for r in res) / sum(r["forwards"] for r in res)
        sources = sorted({k for r in res for k in r["drafted"]})
        by_source = ", ".join(f"{k} {sum(r['drafted'].get(k, 0) for r in res)} / {sum(r['accepted'].get(k, 0) for r in res)}"
                              for k in sources)
        label = method + (" (history)" if with_history else " (no history)" if method.startswith("sense") else "")
        print(f"{label:28s} {speed:7.3f}x {tau:6.2f}  {by_source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
