"""`sense-local bench`: every method on every task, interleaved with plain decoding and the peers.

Per task the prompt is prefilled once; every run then starts from the same KV state (the engine
re-evaluates only the prompt's last token), so runs differ only in how they decode. Repetitions are
interleaved (rep 1 of every method and peer, then rep 2, ...), every second one in reverse order
(ABBA), so a steady drift of a shared machine's speed favours none of them: in one fixed order `ar`
ran first and plain llama-server fourth, and the 135M's quick suite had `ar` at 0.93x-0.99x
llama-server's decode speed by kind; in this order 0.95x-1.03x (two runs an hour apart).
"""
from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass

from .. import plain_layout
from ..chat_template import chat_tokens
from ..engine import Engine
from ..errors import SenseError
from ..generation import GenerationOptions, make_decoder
from ..registry import resolve_model
from ..speculative.methods import METHODS
from ..speculative.rewrap import rewrapped_tokens
from ..speculative.speculator import Speculator
from ..speculative.types import GenerationStats
from .copy_ceiling import copy_ceiling
from .llama_server import PEER_NAMES as SERVER_PEERS, PEER_PREFIX, POOLED, SPEC_TYPES, LlamaServerPeer, server_binary
from .peers import LlamaCppPeer
from .quality import chrf, contains_answer, mean_logprob
from .rows import NEAR_TIE, RunRow  # noqa: F401  NEAR_TIE: the tests read it from here
from .stores import bench_store, with_retrieval
from .summary import format_table, rep_spread, summarise
from .tasks import KINDS, Task, build_tasks

LLAMACPP_PEERS = ("peer-llamacpp", "peer-llamacpp-pld")  # llama-cpp-python's create_completion (slower than both)
PEERS = (*SERVER_PEERS, *LLAMACPP_PEERS)
# Default methods per suite (ablations only in full: they cost as much as a method each).
SUITE_METHODS = {
    "quick": ("ar", "pld", "sense", "sense-soft"),  # --peers adds llama-server, plain and per --spec-type, on every task
    "full": ("ar", "pld", "rest", "sense", "sense-chain", "sense-context", "sense-docs", "sense-soft"),
}
PREFILL_SECONDS = 30.0  # a task's paired fresh prefills stop adding pairs past this
PREFILL_PAIRS = 8
PREFILL_MIN = 256  # prompts at least this long also get a fresh prefill timed, ours beside llama-server's
THETA_SWEEP = (1.0, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1)


def parse_method(spec: str) -> tuple[str, float | None]:
    """'sense-soft@0.6' -> ('sense-soft', 0.6); 'pld' -> ('pld', None)."""
    name, _, theta = spec.partition("@")
    try:
        return name, float(theta) if theta else None
    except ValueError:
        raise SenseError(f"bad method spec '{spec}': expected NAME or NAME@THETA") from None


def first_divergence(a: list[int], b: list[int]) -> int | None:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return None if len(a) == len(b) else n


@dataclass
class ArReference:
    """Plain decoding's first rep on a task: what every other run is compared with."""

    tokens: list[int]
    stats: GenerationStats
    speed: float  # median tok/s over ar's reps
    text: str

    def gap_at(self, at: int | None) -> float | None:
        """ar's top-2 logit gap where another output first parts from ar's (None: it does not, or unknown)."""
        gaps = self.stats.top2_gaps
        return gaps[at] if at is not None and at < len(gaps) else None


def run_task(
    engine: Engine, task: Task, methods, peers, reps: int, peer_reps: dict[str, int], max_tokens: int, store=None,
    free_verification: bool = False, runtimes: dict | None = None,
) -> list[RunRow]:
    """All runs of one task. `store` (docqa tasks) is given to every method; methods that need a
    store are skipped without one. free_verification: drafts sized on a flat cost curve.
    runtimes: each method's speculator kept across tasks, one per rep (made here on first use; None:
    a new one every reply)."""
    prompt = chat_tokens(engine, task.messages())
    engine.prefill(prompt, outputs="keys", with_keys=True)  # key states too: SENSE reads the prompt's
    methods = [m for m in methods if store is not None or not METHODS[parse_method(m)[0]].needs_store]
    outs: dict[str, list] = {m: [] for m in methods}
    peer_outs: dict[str, list] = {p.name: [] for p in peers}
    for rep in range(max([reps] + [peer_reps[p.name] for p in peers])):
        # ar's first rep is the reference (ArReference): only it records each token's top-2 gap
        runs = [(outs[m], lambda m=m: run_method(engine, prompt, m, max_tokens, store, free_verification,
                                              None if runtimes is None else _runtime(runtimes, engine, m, rep, store),
                                              record_gaps=(m == "ar" and rep == 0)))
                for m in methods if rep < reps]
        runs += [(peer_outs[p.name], lambda p=p: p.run(prompt, max_tokens)) for p in peers if rep < peer_reps[p.name]]
        for results, run in runs if rep % 2 == 0 else reversed(runs):  # ABBA: a steady drift favours no one
            results.append(run())
    ar_tokens, ar_stats = outs["ar"][0]
    ar = ArReference(ar_tokens, ar_stats, statistics.median(s.tok_per_s for _, s in outs["ar"]),
                     engine.detokenize(ar_tokens))
    soft_run = any(METHODS[parse_method(m)[0]].rule == "soft" for m in outs)
    rows = [_method_row(engine, task, prompt, m, runs, ar, store, soft_run) for m, runs in outs.items()]
    rows += [_peer_row(task, name, runs, ar) for name, runs in peer_outs.items()]
    if len(prompt) >= PREFILL_MIN:
        _time_prefills(engine, prompt, peers, reps, rows)
    return rows


def _runtime(runtimes: dict, engine: Engine, m: str, rep: int, store) -> Speculator:
    """Method `m`'s speculator of this run's rep `rep` (each rep's runtime sees every task once),
    retrieving from `store` from this reply on."""
    runtime = runtimes.get((m, rep))
    if runtime is None:
        runtime = runtimes[(m, rep)] = Speculator(engine, store, remember_cost=False)
    runtime.use_store(store)
    return runtime


def run_method(engine: Engine, prompt: list[int], m: str, max_tokens: int, store, free_verification: bool,
                speculator: Speculator | None = None, *, record_gaps: bool = False):
    """One run of method spec `m` from the prefilled prompt: (its tokens, its GenerationStats)."""
    name, theta = parse_method(m)
    options = GenerationOptions(method=name, max_tokens=max_tokens, theta=theta, free_verification=free_verification)
    decoder = make_decoder(engine, options, store=store, record_gaps=record_gaps, speculator=speculator)
    tokens = [e.token for e in decoder.generate(prompt, max_tokens) if e.token >= 0]
    return tokens, decoder.stats


def _method_row(engine: Engine, task: Task, prompt: list[int], m: str, runs: list, ar: ArReference, store,
                soft_run: bool) -> RunRow:
    tokens, stats = runs[0]  # the first rep's text is the one compared and scored
    speed = statistics.median(s.tok_per_s for _, s in runs)
    taus = [round(s.tau, 3) for _, s in runs]
    at = first_divergence(tokens, ar.tokens)
    gap = ar.gap_at(at)
    row = RunRow(
        task.name, task.kind, m, stats.tokens, stats.forwards, statistics.median(taus), round(speed, 2),
        round(speed / ar.speed, 3), at is None, None if gap is None else round(gap, 4),
        stats.drafted, stats.accepted, soft_accepted=stats.soft_accepted, tau_reps=taus, output_ids=list(tokens),
        tok_per_s_reps=[round(s.tok_per_s, 2) for _, s in runs],
    )
    if m == "ar":
        sources = [rewrapped_tokens(engine, prompt) or [], store.token_array if store is not None else []]
        row.copy_ceiling = round(copy_ceiling(prompt, tokens, sources), 3)
    # quality, scored by the target, for every method when a soft one runs: ar is the reference,
    # and the exact methods show how far a lossless method drifts from it at near-ties alone
    # (docqa on the 1.5B: two of four tasks part at top-2 gaps of 0.02 and 0.18, and the mean
    # log-prob moves ~18% with no soft acceptance at all)
    if soft_run:
        text = engine.detokenize(tokens)
        row.mean_logprob = round(mean_logprob(engine, prompt, tokens), 4)
        row.chrf_vs_ar = round(chrf(text, ar.text), 2)
        row.answer_ok = contains_answer(text, task.answer)
    return row


def _peer_row(task: Task, name: str, runs: list, ar: ArReference) -> RunRow:
    errors = [r.error for r in runs if r.error]
    ok = [r for r in runs if not r.error]
    speed = statistics.median(r.tok_per_s for r in ok) if ok else 0.0
    first = ok[0] if ok else runs[0]
    taus = [round(len(r.tokens) / r.forwards, 3) for r in ok if r.forwards]
    if name.startswith(PEER_PREFIX) and ok:  # llama-server returns its tokens: compared as ours are
        at = first_divergence(first.tokens, ar.tokens)
        identical, gap = at is None, ar.gap_at(at)
    else:
        identical, gap = bool(ok) and first.text.strip() == ar.text.strip(), None
    return RunRow(
        task.name, task.kind, name, len(first.tokens), first.forwards, statistics.median(taus) if taus else 0.0,
        round(speed, 2), round(speed / ar.speed, 3), identical, None if gap is None else round(gap, 4),
        first.drafted, first.accepted, error=errors[0] if errors else None, tau_reps=taus or None,
        output_ids=list(first.tokens) if name.startswith(PEER_PREFIX) and ok else None,
        tok_per_s_reps=[round(r.tok_per_s, 2) for r in ok] or None,
    )


def _time_prefills(engine: Engine, prompt: list[int], peers, reps: int, rows: list[RunRow]) -> None:
    """A fresh prefill of the prompt (nothing of it cached), ours beside plain llama-server's,
    interleaved; the speeds go on the ar and llama-server rows."""
    server = next((p for p in peers if p.name == PEER_PREFIX), None)
    if server is None:
        return
    ours, theirs = fresh_prefills(engine, server, prompt, reps)
    for row in rows:
        speeds = ours if row.method == "ar" else theirs if row.method == PEER_PREFIX else None
        if speeds:
            row.prefill_tok_per_s = round(statistics.median(speeds), 1)


def fresh_prefills(engine: Engine, server, prompt: list[int], reps: int,
                   seconds: float = PREFILL_SECONDS) -> tuple[list[float], list[float]]:
    """Prompt tok/s of fresh prefills (nothing of the prompt cached), ours and llama-server's, in
    pairs whose order alternates: at least `reps` pairs, more while they fit in `seconds` (at most
    PREFILL_PAIRS); a server run that reused a cached prefix or failed is left out. Ours is evaluated
    as serve and the TUI evaluate a prompt: cancellable, in chunks (prefill_reuse.py). Two pairs
    swing: on the 135M's code and docqa-rag prompts a pair's ratio ranged 0.92x-1.15x (the median
    of 8: 1.03x-1.05x), and the quick suite's two reps had read 0.82x-0.96x."""
    ours, theirs = [], []

    def our_prefill() -> None:
        engine.reset()
        t0 = time.perf_counter()
        engine.prefill(prompt, outputs="last", with_keys=False, cancel=threading.Event())
        ours.append(len(prompt) / (time.perf_counter() - t0))

    def their_prefill() -> None:
        r = server.run(prompt, 1, fresh=True)
        if not r.error and r.prompt_n >= len(prompt) - 1:
            theirs.append(r.prompt_tok_per_s)

    began = time.perf_counter()
    for i in range(PREFILL_PAIRS):
        if i >= reps and time.perf_counter() - began > seconds * i / (i + 1):
            break  # the next pair would not fit
        pair = (our_prefill, their_prefill) if i % 2 == 0 else (their_prefill, our_prefill)
        for prefill in pair:
            prefill()
    return ours, theirs


def peer_repetitions(reps: int, one_runtime: bool) -> dict[str, int]:
    """How often each peer runs a task: as often as our methods, but for a pool kept across the tasks
    (--one-runtime: ngram-mod's, ngram-cache's), which runs each once (a second rep would find its
    own first reply to the same prompt in the pool)."""
    pooled = {f"{PEER_PREFIX}-{t}" for t in POOLED} if one_runtime else set()
    return {p: 1 if p in pooled else reps for p in PEERS}


def _run_tasks(engine, tasks, methods, peers, peer_reps, max_tokens, store, args) -> list[RunRow]:
    rows: list[RunRow] = []
    runtimes = {} if args.one_runtime else None
    for peer in peers if args.one_runtime else ():
        peer.fresh_per_request = False  # its n-gram pool fills across the tasks
    for i, task in enumerate(tasks, 1):
        task_store = store if task.kind.startswith("docqa") else None
        # REST retrieves from the documents; with the passages already in the prompt it has no part
        task_methods = [m for m in methods if not (task.kind == "docqa-rag" and parse_method(m)[0] == "rest")]
        task_rows = run_task(engine, task, task_methods, peers, args.reps, peer_reps,
                             max_tokens, task_store, args.free_verification, runtimes)
        rows.extend(task_rows)
        brief = ", ".join(f"{r.method} {r.tok_per_s:.0f} tok/s tau {r.tau:.2f}" for r in task_rows if r.method in methods or r.method.startswith(PEER_PREFIX))
        print(f"[{i}/{len(tasks)}] {task.name}: {brief}", file=sys.stderr)
    return rows


def run_bench_cli(args) -> int:
    names, methods = _method_names(args)
    tasks = _bench_tasks(args)
    max_tokens = 128 if args.suite == "quick" else 256
    peer_reps = peer_repetitions(args.reps, args.one_runtime)

    from ..cli_config import rpc_workers

    path = resolve_model(args.model)
    engine = Engine(path, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.gpu_layers, key_layer=args.key_layer,
                    rpc=rpc_workers(args))
    peers = _open_peers(path, engine, names, args)
    from ..speculative.cost import cost_curve_for

    layout = plain_layout.measure(engine)  # prompts read on the layout that reads them faster; first, as
    print(plain_layout.describe(layout), file=sys.stderr, flush=True)  # the curve prices where decodes run
    curve = cost_curve_for(engine, measure=True)  # drafts are sized by the measured curve, not a prior
    store = None
    if any(t.kind == "docqa-rag" for t in tasks) or (any(t.kind == "docqa" for t in tasks) and any(m != "ar" for m in methods)):
        store = bench_store(engine, args.suite)
    tasks = [with_retrieval(engine, store, t, max_tokens) if t.kind == "docqa-rag" else t for t in tasks]
    t0 = time.perf_counter()
    try:
        rows = _run_tasks(engine, tasks, methods, peers, peer_reps, max_tokens, store, args)
    finally:
        for p in peers:
            if hasattr(p, "close"):
                p.close()
    summary = summarise(rows)
    doc = _results(engine, path, args, peer_reps, max_tokens, round(time.perf_counter() - t0, 1), rows, summary, curve)
    doc["prompt_layout"] = layout
    _print_report(summary, doc["rep_spread"], curve, tasks, args, peers, peer_reps, doc["seconds"], store)
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


def _method_names(args) -> tuple[list[str], list[str]]:
    """(every name asked for, peers included; our methods, ar first), checked; --reps defaulted per suite."""
    names = args.methods.split(",") if args.methods else list(SUITE_METHODS[args.suite])
    if getattr(args, "peers", False):
        names += [p for p in SERVER_PEERS if p not in names]
    if args.theta_sweep:
        names = ["ar", "sense", *(f"sense-soft@{t}" for t in THETA_SWEEP)]
    unknown = [n for n in names if parse_method(n)[0] not in METHODS and n not in PEERS]
    if unknown:
        raise SenseError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join([*METHODS, *PEERS])}")
    if args.reps is None:
        args.reps = 1 if args.suite == "quick" else 3
    if args.reps < 1:
        raise SenseError("--reps must be at least 1")
    return names, ["ar"] + [n for n in names if parse_method(n)[0] in METHODS and n != "ar"]


def _bench_tasks(args) -> list[Task]:
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    bad_kinds = [k for k in kinds if k not in KINDS]
    if bad_kinds:
        raise SenseError(f"unknown kind(s) {', '.join(bad_kinds)}; known: {', '.join(KINDS)}")
    return [t for t in build_tasks(args.suite) if t.kind in kinds]


def _open_peers(path, engine: Engine, names: list[str], args) -> list:
    """The peers asked for: llama-cpp-python in this process, llama-server as its own."""
    peers = [
        LlamaCppPeer(path, n_ctx=args.ctx, n_threads=engine.n_threads, n_gpu_layers=args.gpu_layers, lookup=p.endswith("pld"))
        for p in LLAMACPP_PEERS if p in names
    ]
    if any(p in names for p in SERVER_PEERS):
        binary = server_binary()
        spec = dict(zip(SERVER_PEERS, (None, *SPEC_TYPES)))
        peers += [LlamaServerPeer(binary, path, spec_type=spec[p], n_ctx=args.ctx, n_threads=engine.n_threads,
                                  n_gpu_layers=args.gpu_layers) for p in SERVER_PEERS if p in names]
    return peers


def _results(engine: Engine, path, args, peer_reps: dict, max_tokens: int, seconds: float, rows: list[RunRow],
             summary: dict, curve) -> dict:
    """The --json document."""
    info = engine.info
    return {
        "model": {"path": str(path), "name": info.name, "quantization": info.quantization,
                  "fingerprint": info.fingerprint, "threads": engine.n_threads, "gpu_layers": args.gpu_layers, "key_layer": engine.key_layer},
        "suite": args.suite,
        "reps": args.reps,
        "peer_reps": peer_reps,
        "max_tokens": max_tokens,
        "free_verification": args.free_verification,
        "one_runtime": args.one_runtime,
        "seconds": seconds,
        "runs": [asdict(r) for r in rows],
        "summary": summary,
        "rep_spread": rep_spread(rows),
        "cost_curve": curve.to_dict(),
    }


def _print_report(summary: dict, spread: dict[str, float], curve, tasks: list[Task], args, peers: list,
                  peer_reps: dict, seconds: float, store) -> None:
    print(format_table(summary))
    if spread:  # summary.rep_spread
        print("rep to rep, one method on one task (median over tasks of |a rep's tok/s over the first's - 1|): "
              + ", ".join(f"{m} {100 * v:.1f}%" for m, v in spread.items()))
    print("cost of a k-token decode in one-token decodes, c(k): "
          + ", ".join(f"c({k})={c:.1f}" for k, c in zip(curve.lengths, curve.costs) if k in (2, 4, 8, 16, 32)))
    peer_note = ""
    if peers:
        peer_counts = ", ".join(f"{p.name} {peer_reps[p.name]}" for p in peers)
        peer_note = f"peers on every task, reps: {peer_counts}, "
    print(f"({len(tasks)} tasks, {args.reps} interleaved reps, {peer_note}"
          f"{seconds} s; store: {store.n_vectors if store else 0} vectors"
          + ("; drafts sized as if verification were free" if args.free_verification else "")
          + ("; one runtime per method across the tasks" if args.one_runtime else "") + ")")
