"""Draft-policy choices compared without timing noise: the model's greedy outputs of a suite's tasks
are recorded once, then the speculative loop is replayed on them with prompt lookup under each set of
priors given. In the replay the "model" emits the recorded tokens, so a draft is accepted exactly
where it matches what the model wrote, and a run's time is the sum of c(decode size) on the model's
measured cost curve: deterministic, so a 2% difference is a difference (the live bench on this shared
2-core machine swings 10% between runs). What it leaves out: drafting time (the same for every
prior) and text that parts from the recording at a near-tie.

Run: `python -m benchmarks.replay_bench --model M --kinds grounded,code --outputs F.json
--priors 0.2,0.45,0.6,0.75,0.9,0.92,0.99 --priors ...` (the first run records F.json: ar on every
task, ~1 min for the 135M and ~12 min for the 1.5B on the full suite; later runs read it).
`--base REV` adds prompt lookup as it was at git revision REV (the drafters package's files read
with `git show`): a change to the drafter, replayed beside what it replaces.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sense_local.bench.tasks import KINDS, build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine, EvalOutput
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.speculative.cost import CostCurve, cost_curve_for
from sense_local.speculative.drafters import pld
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.rewrap import rewrapped_tokens

MAX_TOKENS = 128


class ReplayEngine:
    """Stands in for the target: after position p its greedy token is the recording's token p + 1."""

    n_ctx = 1 << 16
    n_embd = 1

    def __init__(self, recording: list[int], eos: int, eog: frozenset[int] = frozenset()):
        self.recording = recording  # [prompt + output (+ eos)] token ids
        self.eos = eos
        self.eog = eog  # the model's end-of-generation tokens that occur in the prompt (its template's)
        self.n_vocab = max(max(recording), eos) + 1
        self.tokens: list[int] = []
        self.decodes: list[int] = []  # size of every decode after the prefill

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]

    def cancellable(self, cancel):
        return contextlib.nullcontext()

    def prefill(self, prompt, *, outputs="last", with_keys=False, cancel=None, progress=None):
        self.tokens = []
        out = self.eval(prompt, 0, outputs=outputs)
        self.decodes.clear()
        return out

    def eval(self, tokens, start_pos=None, *, outputs="all", with_keys=False):
        start = self.n_past if start_pos is None else start_pos
        del self.tokens[start:]
        self.tokens.extend(int(t) for t in tokens)
        self.decodes.append(len(tokens))
        positions = range(start, self.n_past) if outputs == "all" else [self.n_past - 1]
        rows = np.zeros((len(positions), self.n_vocab), np.float32)
        for row, p in enumerate(positions):
            rows[row, self.recording[p + 1] if p + 1 < len(self.recording) else self.eos] = 1.0
        return EvalOutput(rows, None)

    def is_eog(self, token: int) -> bool:
        return token == self.eos or token in self.eog

    def piece(self, token: int) -> bytes:
        return b""


def record(model: str, suite: str, kinds: list[str], path: Path) -> dict:
    engine = Engine(resolve_model(model), n_ctx=4096)
    tasks = []
    for task in build_tasks(suite):
        if task.kind not in kinds or task.kind == "docqa-rag":  # docqa-rag's prompt needs a store
            continue
        prompt = chat_tokens(engine, task.messages())
        decoder = make_decoder(engine, GenerationOptions(method="ar", max_tokens=MAX_TOKENS))
        output = [e.token for e in decoder.generate(prompt, MAX_TOKENS) if e.token >= 0]
        eos = decoder.stats.stop_reason == "eos"
        # the token that ended the reply (the loop does not emit it): the model's choice after the output
        end = int(np.argmax(engine.prefill(prompt + output, outputs="last").logits[-1])) if eos else None
        tasks.append({"name": task.name, "kind": task.kind, "prompt": [int(t) for t in prompt],
                      "joined": rewrapped_tokens(engine, prompt), "output": [int(t) for t in output],
                      "eos": eos, "eos_token": end,
                      "eog": sorted({int(t) for t in prompt if engine.is_eog(int(t))})})
        print(f"recorded {task.name}: {len(output)} tokens", file=sys.stderr, flush=True)
    curve = cost_curve_for(engine, measure=True)
    data = {"model": model, "suite": suite, "curve": curve.to_dict(), "tasks": tasks}
    path.write_text(json.dumps(data))
    return data


def pld_at(rev: str):
    """The drafters package's pld module as it was at git revision `rev` (a copy of the package's
    files at rev, imported under another name: the working tree's stays as it is)."""
    root = Path(__file__).resolve().parents[1]
    package = "sense_local/speculative/drafters"
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{package}"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    folder = Path(tempfile.mkdtemp(prefix="replay-base-")) / "drafters_base"
    folder.mkdir()
    for name in (n for n in names if n.endswith(".py")):
        text = subprocess.run(["git", "show", f"{rev}:{package}/{name}"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
        text = text.replace("from ...", "from sense_local.").replace("from ..", "from sense_local.speculative.")
        (folder / name).write_text(text)
    spec = importlib.util.spec_from_file_location("drafters_base", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["drafters_base"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("drafters_base.pld")


def replay(task: dict, curve: CostCurve, priors: dict[int, float], lookup=pld) -> tuple[int, int, float]:
    """(tokens, target forwards, modeled time in one-token decodes) of pld (`lookup`: the module) on
    one recorded task."""
    # the reply's own end token where the recording has it (a draft that copies the prompt's end of
    # turn is then accepted there, as live); in older recordings a token of no text stands for it
    eos = task.get("eos_token") or max(task["prompt"] + task["output"]) + 1
    engine = ReplayEngine(task["prompt"] + task["output"] + ([eos] if task["eos"] else []), eos,
                          frozenset(task.get("eog", ())))
    # the template's end of turn is never part of a learned edit (pld at an older revision: no such rule)
    fixed = {"fixed": engine.is_eog} if "fixed" in inspect.signature(lookup.PromptLookupDrafter).parameters else {}
    drafter = lookup.PromptLookupDrafter(rewrap=lambda tokens: task["joined"], **fixed)
    drafter.estimate.priors = priors
    decoder = SpecDecoder(engine, method="pld", drafter=drafter, cost=curve)
    decoder.cost.observe = lambda n_tokens, seconds: None  # the curve is exact here: nothing to learn
    output = [e.token for e in decoder.generate(task["prompt"], MAX_TOKENS) if e.token >= 0]
    assert output == task["output"][: len(output)], f"{task['name']}: the replay left the recording"
    return len(output), decoder.stats.forwards, sum(curve.cost(k) for k in engine.decodes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="replay_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="test")
    parser.add_argument("--suite", default="quick", choices=("quick", "full"))
    parser.add_argument("--kinds", default="grounded,code,open")
    parser.add_argument("--outputs", type=Path, required=True, help="recorded outputs (made if missing)")
    parser.add_argument("--priors", action="append", default=[], help="pld's 7 match-bucket priors, comma-separated")
    parser.add_argument("--base", metavar="REV", help="also replay prompt lookup as it was at this git revision")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    if args.outputs.exists():
        try:
            data = json.loads(args.outputs.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read {args.outputs}: {exc}")
        if not isinstance(data, dict) or not {"curve", "tasks"} <= data.keys():
            parser.error(f"{args.outputs} is not a recording of this bench; give a new path to record one")
    else:
        data = record(args.model, args.suite, kinds, args.outputs)
    curve = CostCurve(tuple(data["curve"]["lengths"]), tuple(data["curve"]["costs"]))
    variants = {"current": (dict(pld.PRIORS), pld)}
    if args.base:
        try:
            base = pld_at(args.base)
        except subprocess.CalledProcessError as exc:
            parser.error(f"--base {args.base}: {exc.stderr.strip() or exc}")
        variants[f"pld at {args.base}"] = (dict(base.PRIORS), base)
    for spec in args.priors:
        values = [float(x) for x in spec.split(",")]
        if len(values) != len(pld.PRIORS):
            parser.error(f"--priors needs {len(pld.PRIORS)} values, got {len(values)}")
        variants[spec] = (dict(enumerate(values)), pld)
    tasks = [t for t in data["tasks"] if t["kind"] in kinds]
    results = {name: {t["name"]: replay(t, curve, priors, lookup) for t in tasks}
               for name, (priors, lookup) in variants.items()}
    print(f"{data['model']}, cost curve {data['curve']['costs']}; per cell: tau, modeled speedup over ar")
    for i, name in enumerate(variants):
        print(f"  [{i}] {name}")
    print(f"{'task':34s}" + "".join(f"{f'[{i}]':>15s}" for i in range(len(variants))))
    groups = [(t["name"], [t["name"]]) for t in tasks]
    groups += [(kind, [t["name"] for t in tasks if t["kind"] == kind]) for kind in kinds]
    for label, names in groups:
        if not names:
            continue
        cells = []
        for name in variants:
            tokens, forwards, time = (sum(results[name][n][i] for n in names) for i in range(3))
            cells.append(f"{tokens / forwards:7.2f} {tokens / time:5.2f}x")
        print(f"{label:34s}" + "".join(f"{c:>15s}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
