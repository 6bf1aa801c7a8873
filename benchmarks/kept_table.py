"""What the recycle table kept with the reply history is worth to a new process: an earlier run
answers the returning user's first conversations (bench/chat_tasks.RETURNING_USER, one domain: small
Python scripts for files and text), its history keeping the replies and the recycle table; then the
quick suite's everyday turns (chat, qa, translate, math, summary) are answered in order by
runtimes that start from what that run kept or not, a task at a time each: `kept` opens its history
again (its replies, which SENSE searches, and its table), `table` a new history holding only its
table, `new` an empty one. Both keep their own history and table from task to task, as a server
or the chat app does. Greedy, 128 tokens, `--free-verification` by default (a GPU's curve: where the
loop hands rows to the table at all; on a steep CPU curve it does not, and nothing is kept).

Per task and kind (median): tau of each runtime; the tokens by source (each drafter's accepted, the target's own).
`--turns returning` answers the returning user's later conversations instead (the same domain as
the earlier run's: a user who comes back after the process ended).

    python -m benchmarks.kept_table --model default --earlier 20 --runtimes table,new
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sense_local.bench.chat_tasks import RETURNING_USER
from sense_local.bench.tasks import build_tasks
from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.reply_history import ReplyHistory
from sense_local.speculative.speculator import Speculator

KINDS = ("chat", "qa", "translate", "math", "summary")


def runtime(engine: Engine, directory: Path) -> Speculator:
    """A conversation's speculator with the reply history in `directory` (made or reopened)."""
    speculator = Speculator(engine, None, remember_cost=False)
    speculator.history = ReplyHistory.open(engine, directory=directory)
    return speculator


def reply(engine: Engine, speculator: Speculator, prompt: list[int], args) -> tuple[float, dict]:
    """(tau, {source: accepted tokens}) of one reply, kept in the runtime's history as a front end's is."""
    options = GenerationOptions(method=args.method, max_tokens=args.tokens, free_verification=args.free)
    decoder = make_decoder(engine, options, speculator=speculator)
    tokens, sources = [], {}
    for ev in decoder.generate(prompt, args.tokens):
        if ev.token >= 0:
            tokens.append(ev.token)
            sources[ev.source] = sources.get(ev.source, 0) + 1
    speculator.remember(len(prompt), tokens)
    return decoder.stats.tau, sources


def answered_turns(args):
    """(name, kind, messages) of each turn the runtimes answer."""
    if args.turns == "returning":
        return [(f"returning-{i}", "returning", [{"role": "user", "content": q}])
                for i, q in enumerate(RETURNING_USER[args.earlier:], args.earlier)]
    return [(t.name, t.kind, t.messages()) for t in build_tasks("quick") if t.kind in KINDS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--earlier", type=int, default=20, help="returning-user conversations the earlier run answers")
    ap.add_argument("--method", default="sense")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runtimes", default="kept,table,new", help="which of kept, table, new answer the turns")
    ap.add_argument("--turns", choices=("everyday", "returning"), default="everyday",
                    help="the quick suite's everyday turns, or the returning user's conversations after the earlier run's")
    ap.add_argument("--cpu-curve", dest="free", action="store_false",
                    help="size drafts on this machine's cost curve instead of a flat one")
    args = ap.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=4096, n_threads=None)
    with tempfile.TemporaryDirectory() as tmp:
        kept_dir = Path(tmp) / "kept"
        t0 = time.perf_counter()
        earlier = runtime(engine, kept_dir)
        for question in RETURNING_USER[: args.earlier]:
            reply(engine, earlier, chat_tokens(engine, [{"role": "user", "content": question}]), args)
        earlier.history.close()  # the process ends: its history and table are on disk
        print(f"earlier run: {args.earlier} conversations in {time.perf_counter() - t0:.0f} s, "
              f"table kept: {(kept_dir / 'recycle.npz').exists()}", flush=True)
        ReplyHistory.open(engine, directory=Path(tmp) / "table").close()  # a new history, given the kept table
        if (kept_dir / "recycle.npz").exists():  # none where the curve handed the table no rows (--cpu-curve)
            shutil.copy(kept_dir / "recycle.npz", Path(tmp) / "table" / "recycle.npz")
        runtimes = {name: runtime(engine, Path(tmp) / name) for name in args.runtimes.split(",")}
        for name, speculator in runtimes.items():
            print(f"{name}: {len(speculator.history.store.manifest.documents)} replies, "
                  f"{'a kept table' if speculator.history.table_state else 'no table'}", flush=True)
        taus: dict[str, dict[str, list[float]]] = {name: {} for name in runtimes}
        accepted: dict[str, dict[str, int]] = {name: {} for name in runtimes}
        try:
            for i, (turn, kind, messages) in enumerate(answered_turns(args)):
                prompt = chat_tokens(engine, messages)
                order = list(runtimes) if i % 2 == 0 else list(reversed(runtimes))
                line = []
                for name in order:
                    tau, sources = reply(engine, runtimes[name], prompt, args)
                    taus[name].setdefault(kind, []).append(tau)
                    for source, n in sources.items():
                        accepted[name][source] = accepted[name].get(source, 0) + n
                    line.append(f"{name} {tau:.2f}")
                print(f"{turn}: " + ", ".join(line), flush=True)
        finally:
            for speculator in runtimes.values():
                speculator.history.close()
    print(f"\ntau by kind (median), {args.method}, {'free verification' if args.free else 'this CPU curve'}:")
    kinds = [k for k in KINDS + ("returning",) if k in taus[next(iter(runtimes))]]
    print(f"{'runtime':<6} " + " ".join(f"{k:>9}" for k in kinds))
    for name in runtimes:
        print(f"{name:<6} " + " ".join(f"{statistics.median(taus[name][k]):9.2f}" for k in kinds))
    for name in runtimes:
        print(f"tokens by source, {name}: " + ", ".join(f"{s} {n}" for s, n in sorted(accepted[name].items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
