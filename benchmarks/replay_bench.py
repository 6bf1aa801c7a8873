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

`--methods pld,sense,...` replays registered methods with their drafters made as the product makes
them (a one-off speculator; docqa kinds with the bench's document store), SENSE included: the key
state the model computed at every position of each recording is recorded once beside it
(F.keys.npz, one evaluation of the whole recording per task), and the replayed "model" hands over
the recorded state wherever the replay is on the recording (tree drafts too). Drafting time is
printed apart, in ms per token on this machine: the modeled speedup leaves it out.
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

from sense_local.bench.stores import bench_store, with_retrieval
from sense_local.bench.tasks import KINDS, build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.errors import SenseError
from sense_local.engine import Engine, EvalOutput
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.speculative.cost import CostCurve, cost_curve_for
from sense_local.speculative.drafters import pld
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.methods import get_method
from sense_local.speculative.rewrap import rewrapped_tokens
from sense_local.speculative.speculator import Speculator

MAX_TOKENS = 128


class ReplayEngine:
    """Stands in for the target: after position p its greedy token is the recording's token p + 1.
    With `keys` ([len(recording), n_embd], the key state the model computed at each position) it
    hands key states over as the engine does, and a tree draft is verified as one decode; with
    `vocab` (the real model, never decoding) its vocabulary, key layer and fingerprint are the
    model's, as SENSE and the product's drafters want them."""

    n_ctx = 1 << 16

    def __init__(self, recording: list[int], eos: int, eog: frozenset[int] = frozenset(), *,
                 keys: np.ndarray | None = None, vocab=None):
        self.recording = recording  # [prompt + output (+ eos)] token ids
        self.eos = eos
        self.eog = eog  # the model's end-of-generation tokens that occur in the prompt (its template's)
        self.vocab = vocab
        self.recorded_keys = keys  # [len(recording), n_embd] float32, or None: no key states
        self.n_embd = keys.shape[1] if keys is not None else 1
        self.n_vocab = vocab.n_vocab if vocab is not None else max(max(recording), eos) + 1
        self.tokens: list[int] = []
        self.decodes: list[int] = []  # size of every decode after the prefill
        self._same = 0  # tokens[:_same] == recording[:_same]: positions whose key states are the recording's
        self._keyed = False  # the prompt was evaluated with key states

    # what the drafters and the speculator read of the real model: its vocabulary, key layer and identity
    # (nothing that would change its state: a call outside this list fails rather than reach the model)
    FROM_MODEL = frozenset({"tokenize", "detokenize", "detokenize_special", "special_mask", "key_layer",
                            "fingerprint", "path", "n_threads", "n_gpu_layers", "rpc_workers"})

    @classmethod
    def of_task(cls, task: dict, *, keys: np.ndarray | None = None, vocab=None) -> "ReplayEngine":
        """The model of a recorded task (replay_bench's or replay_returning_user's recording)."""
        tokens = recording_of(task)
        return cls(tokens, tokens[-1] if task["eos"] else max(tokens) + 1, frozenset(task.get("eog", ())),
                   keys=None if keys is None else np.asarray(keys, np.float32), vocab=vocab)

    def __getattr__(self, name):
        vocab = self.__dict__.get("vocab")
        if vocab is None or name not in self.FROM_MODEL:
            raise AttributeError(name)
        return getattr(vocab, name)

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]
        self._same = min(self._same, n)

    def _extend(self, tokens) -> None:
        self.tokens.extend(int(t) for t in tokens)
        rec = self.recording
        while self._same < len(self.tokens) and self._same < len(rec) and self.tokens[self._same] == rec[self._same]:
            self._same += 1

    def cancellable(self, cancel):
        return contextlib.nullcontext()

    def prefill(self, prompt, *, outputs="last", with_keys=False, cancel=None, progress=None):
        self.tokens, self._same, self._keyed = [], 0, with_keys
        out = self.eval(prompt, 0, outputs=outputs, with_keys=with_keys)
        self.decodes.clear()
        return out

    def _row(self, p: int) -> int:
        """The model's greedy token after position p (on the recording)."""
        return self.recording[p + 1] if p + 1 < len(self.recording) else self.eos

    def _keys(self, positions, on_recording) -> np.ndarray:
        rows = np.zeros((len(positions), self.n_embd), np.float32)
        for row, (p, on) in enumerate(zip(positions, on_recording)):
            if on and p < len(self.recorded_keys):
                rows[row] = self.recorded_keys[p]
        return rows

    def eval(self, tokens, start_pos=None, *, outputs="all", with_keys=False):
        start = self.n_past if start_pos is None else start_pos
        self.truncate(start)
        self._extend(tokens)
        self.decodes.append(len(tokens))
        positions = range(start, self.n_past) if outputs == "all" else [self.n_past - 1]
        rows = np.zeros((len(positions), self.n_vocab), np.float32)
        for row, p in enumerate(positions):
            rows[row, self._row(p)] = 1.0
        if not with_keys or self.recorded_keys is None:
            return EvalOutput(rows, np.zeros((0, self.n_embd), np.float32))
        keyed = list(range(start, self.n_past)) if outputs in ("all", "keys") else [self.n_past - 1]
        return EvalOutput(rows, self._keys(keyed, [p < self._same for p in keyed]))

    def eval_one(self, token: int, *, with_keys: bool = False) -> EvalOutput:
        return self.eval([token], outputs="last", with_keys=with_keys)

    def committed_keys(self, upto: int) -> np.ndarray | None:
        if not self._keyed or self.recorded_keys is None or upto > self._same:
            return None
        return self.recorded_keys[:upto]

    def eval_tree(self, root: int, tokens: np.ndarray, parents: np.ndarray, *, with_keys: bool = True) -> EvalOutput:
        """The root and a draft tree after it in one decode: a node's row is the recording's next
        token where its path is the recording, else a row nothing is accepted after."""
        start = self.n_past
        self._extend([root])
        n = len(tokens)
        depth = np.zeros(n, np.int64)
        on = np.zeros(n, bool)
        root_on = self._same > start
        for i in range(n):
            parent = int(parents[i])
            depth[i] = 0 if parent < 0 else depth[parent] + 1
            above = root_on if parent < 0 else on[parent]
            p = start + 1 + depth[i]
            on[i] = above and p < len(self.recording) and int(tokens[i]) == self.recording[p]
        rows = np.zeros((n + 1, self.n_vocab), np.float32)
        rows[0, self._row(start)] = 1.0
        for i in range(n):
            rows[i + 1, self._row(start + 1 + depth[i]) if on[i] else self.eos] = 1.0
        self.decodes.append(n + 1)
        positions = [start] + [start + 1 + int(d) for d in depth]
        keys = (self._keys(positions, [root_on] + on.tolist()) if with_keys and self.recorded_keys is not None
                else np.zeros((0, self.n_embd), np.float32))
        return EvalOutput(rows, keys)

    def keep_path(self, path, tokens: np.ndarray) -> None:
        self._extend(int(tokens[int(i)]) for i in path)

    def is_eog(self, token: int) -> bool:
        return token == self.eos or token in self.eog

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token) if self.vocab is not None else b""


def record(model: str, suite: str, kinds: list[str], path: Path) -> dict:
    engine = Engine(resolve_model(model), n_ctx=4096)
    store = bench_store(engine, suite) if any(k.startswith("docqa") for k in kinds) else None
    tasks = []
    for task in build_tasks(suite):
        if task.kind not in kinds:
            continue
        if task.kind == "docqa-rag":  # the question with passages retrieved, as the bench asks it
            task = with_retrieval(engine, store, task, MAX_TOKENS)
        tasks.append(recorded_reply(engine, task.name, task.kind, chat_tokens(engine, task.messages())))
    curve = cost_curve_for(engine, measure=True)
    data = {"model": model, "suite": suite, "curve": curve.to_dict(), "tasks": tasks}
    path.write_text(json.dumps(data))
    return data


def recorded_reply(engine: Engine, name: str, kind: str, prompt: list[int], max_tokens: int = MAX_TOKENS) -> dict:
    """The model's greedy (`ar`) reply to `prompt`, as a recorded task."""
    decoder = make_decoder(engine, GenerationOptions(method="ar", max_tokens=max_tokens))
    output = [e.token for e in decoder.generate(prompt, max_tokens) if e.token >= 0]
    eos = decoder.stats.stop_reason == "eos"
    # the token that ended the reply (the loop does not emit it): the model's choice after the output
    end = int(np.argmax(engine.prefill(prompt + output, outputs="last").logits[-1])) if eos else None
    print(f"recorded {name}: {len(output)} tokens", file=sys.stderr, flush=True)
    return {"name": name, "kind": kind, "prompt": [int(t) for t in prompt], "joined": rewrapped_tokens(engine, prompt),
            "output": [int(t) for t in output], "eos": eos, "eos_token": end,
            "eog": sorted({int(t) for t in prompt if engine.is_eog(int(t))})}


def record_keys(engine: Engine, tasks: list[dict], path: Path) -> dict[str, np.ndarray]:
    """The key state the model computes at every position of each recorded task (prompt, output and
    end token), at the engine's key layer: one evaluation of the whole recording per task."""
    keys = {}
    for task in tasks:
        tokens = recording_of(task)
        engine.reset()
        keys[task["name"]] = engine.eval(tokens, 0, outputs="keys", with_keys=True).keys.astype(np.float16)
        print(f"key states of {task['name']}: {len(tokens)} positions", file=sys.stderr, flush=True)
    np.savez(path, **keys)
    return keys


def recording_of(task: dict) -> list[int]:
    """The tokens the replayed model writes: the prompt, the output and the reply's end token (where
    the recording has it; in older recordings a token of no text stands for it)."""
    eos = task.get("eos_token")
    if eos is None:
        eos = max(task["prompt"] + task["output"]) + 1
    return task["prompt"] + task["output"] + ([eos] if task["eos"] else [])


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


def replay(task: dict, curve: CostCurve, priors: dict[int, float], lookup=pld) -> tuple[int, int, float, float]:
    """(tokens, target forwards, modeled time in one-token decodes, drafting seconds) of pld
    (`lookup`: the module) on one recorded task."""
    engine = ReplayEngine.of_task(task)
    # the template's end of turn is never part of a learned edit (pld at an older revision: no such rule)
    fixed = {"fixed": engine.is_eog} if "fixed" in inspect.signature(lookup.PromptLookupDrafter).parameters else {}
    drafter = lookup.PromptLookupDrafter(rewrap=lambda tokens: task["joined"], **fixed)
    drafter.estimate.priors = priors
    return _run(task, engine, SpecDecoder(engine, method="pld", drafter=drafter, cost=curve), curve)


def replay_method(task: dict, curve: CostCurve, method: str, vocab: Engine, keys: np.ndarray, store) -> tuple:
    """The same figures for a registered method (pld, sense, ...), its drafter made as the product
    makes it (a one-off speculator over the task's store), on the recording's key states."""
    engine = ReplayEngine.of_task(task, keys=keys, vocab=vocab)
    speculator = Speculator(engine, store if task["kind"].startswith("docqa") else None, remember_cost=False)
    drafter = speculator.drafter_for(get_method(method))
    return _run(task, engine, SpecDecoder(engine, method=method, drafter=drafter, cost=curve), curve)


def replayed_events(task: dict, decoder: SpecDecoder, max_tokens: int = MAX_TOKENS) -> list:
    """The token events of `decoder` (on a ReplayEngine) replaying the task's reply (recorded with
    `max_tokens`), checked against it."""
    if decoder.cost is not None:
        decoder.cost.observe = lambda n_tokens, seconds: None  # the curve is exact here: nothing to learn
    events = [e for e in decoder.generate(task["prompt"], max_tokens) if e.token >= 0]
    assert [e.token for e in events] == task["output"], f"{task['name']}: the replay left the recording"
    return events


def _run(task: dict, engine: ReplayEngine, decoder: SpecDecoder, curve: CostCurve) -> tuple:
    tokens = len(replayed_events(task, decoder))
    return tokens, decoder.stats.forwards, sum(curve.cost(k) for k in engine.decodes), decoder.stats.t_draft


def unreplayable(methods: list[str], *, with_documents: bool) -> str | None:
    """Why one of `methods` cannot be replayed (None: all can): an unknown name; a rule other than
    exact acceptance (the replayed model's rows are one-hot: nothing else can be judged); a drafter
    from the documents where the tasks have none."""
    for m in methods:
        try:
            method = get_method(m)
        except SenseError as exc:
            return str(exc)
        if method.rule != "exact":
            return f"--methods: {m} verifies by its {method.rule} rule, which a replay cannot judge"
        if method.needs_store and not with_documents:
            return f"--methods: {m} drafts from the documents: replay it on a docqa kind"
    return None


def recorded_keys(engine: Engine, tasks: list[dict], path: Path) -> dict[str, np.ndarray]:
    """The recording's key states, recorded into `path` on first use, and again where the file does
    not hold one state per position of every task at the engine's width (a recording made anew at
    the same path, or by another model)."""
    if path.exists():
        with np.load(path) as saved:
            keys = {name: saved[name] for name in saved.files}
        if all(t["name"] in keys and keys[t["name"]].shape == (len(recording_of(t)), engine.n_embd) for t in tasks):
            return keys
        print(f"{path}: not this recording's key states; recording them again", file=sys.stderr)
    return record_keys(engine, tasks, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="replay_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="test")
    parser.add_argument("--suite", default="quick", choices=("quick", "full"))
    parser.add_argument("--kinds", default="grounded,code,open")
    parser.add_argument("--outputs", type=Path, required=True, help="recorded outputs (made if missing)")
    parser.add_argument("--priors", action="append", default=[], help="pld's 7 match-bucket priors, comma-separated")
    parser.add_argument("--base", metavar="REV", help="also replay prompt lookup as it was at this git revision")
    parser.add_argument("--methods", default="", help="also replay these registered methods (pld, sense, ...) as the "
                        "product makes their drafters, on the recording's key states (F.keys.npz, made if missing)")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    methods = [m for m in args.methods.split(",") if m]
    if problem := unreplayable(methods, with_documents=any(k.startswith("docqa") for k in kinds)):
        parser.error(problem)
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
    runs = {name: (lambda t, priors=priors, lookup=lookup: replay(t, curve, priors, lookup))
            for name, (priors, lookup) in variants.items()}
    if methods:
        vocab = Engine(resolve_model(data["model"]), n_ctx=4096)
        keys = recorded_keys(vocab, data["tasks"], args.outputs.with_suffix(".keys.npz"))
        store = bench_store(vocab, data["suite"]) if any(t["kind"].startswith("docqa") for t in tasks) else None
        for m in methods:
            runs[m] = lambda t, m=m: replay_method(t, curve, m, vocab, keys[t["name"]], store)
    results = {name: {t["name"]: run(t) for t in tasks} for name, run in runs.items()}
    print(f"{data['model']}, cost curve {data['curve']['costs']}; per cell: tau, modeled speedup over ar")
    for i, name in enumerate(runs):
        print(f"  [{i}] {name}")
    print(f"{'task':34s}" + "".join(f"{f'[{i}]':>15s}" for i in range(len(runs))))
    groups = [(t["name"], [t["name"]]) for t in tasks]
    groups += [(kind, [t["name"] for t in tasks if t["kind"] == kind]) for kind in kinds]
    for label, names in groups:
        if not names:
            continue
        cells = []
        for name in runs:
            tokens, forwards, time = (sum(results[name][n][i] for n in names) for i in range(3))
            cells.append(f"{tokens / forwards:7.2f} {tokens / time:5.2f}x")
        print(f"{label:34s}" + "".join(f"{c:>15s}" for c in cells))
    total = sum(len(t["output"]) for t in tasks)
    if methods:
        print("(a tree decode, and one with key states, is priced as a plain chain of as many rows: on the 1.5B here "
              "trees of 9-25 rows measured within 5% of such chains, key states 1.008x)")
    print("drafting, ms per token (Python, this machine; not in the modeled time): "
          + ", ".join(f"[{i}] {1000 * sum(r[3] for r in results[name].values()) / total:.2f}" for i, name in enumerate(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
