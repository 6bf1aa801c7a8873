"""The wait a client sees, ours against llama.cpp's own server: the same streamed
/v1/chat/completions turns sent by one client to `sense-local serve` and to llama-server (built from
the llama.cpp that llama-cpp-python vendors: scripts/llama_server_build.py), same model, threads and
context size, greedy.

For each quick-suite task of the kinds asked, in interleaved reps whose order alternates, every side
gets the task's messages once: a server of ours for each method (one server would find the turn
already read for the method after the first), llama-server plain and, where asked, with a
`--spec-type` (one whose n-gram pool outlives a request is restarted first, as in the bench).
Each rep's messages open with a system line of their own (and the run's), so neither server finds
the prompt cached from an earlier rep or run (ours keeps conversations on disk): every turn reads its
whole prompt, as a new question does. Per side, over plain
llama-server's on the same turn (median over the turns): the first-token wait (request sent to
first text), decode tok/s (first text to last, tokens after the first over that time, as the
servers count), and the whole wait (request to last text); then how many replies read the same as
llama-server's (greedy on both: they part only at near-ties). Our server runs with --no-history:
a rep must not draft from the answer it gave the rep before.

    python -m benchmarks.serve_vs_peer --model default --kinds chat,qa,math --methods ar,pld --reps 2
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

from benchmarks.stream_timing import StreamClock, chat_stream, serving
from sense_local.bench.llama_server import LlamaServerPeer, server_binary
from sense_local.bench.tasks import build_tasks
from sense_local.engine import default_threads
from sense_local.registry import resolve_model

PLAIN = "llama-server"


def chat_turn(base: str, messages: list[dict], tokens: int, extra: dict) -> dict:
    """One streamed greedy chat turn, timed by the client: first text, last text, tokens shown, text.
    llama-server counts a reply's end-of-generation token among its tokens (`timings.predicted_n`,
    `usage`), we count what is shown: a turn that ended on it ("stop") is one token shorter here."""
    body = {"messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **extra}
    clock = StreamClock()
    usage, timings, finish = {}, {}, None
    for doc in chat_stream(base, body, timeout=1800):
        usage, timings = doc.get("usage") or usage, doc.get("timings") or timings
        finish = next((c["finish_reason"] for c in doc.get("choices", []) if c.get("finish_reason")), finish)
        clock.take(doc)
    if timings:  # llama-server's
        n = int(timings.get("predicted_n", 0)) - (finish == "stop")
    else:
        n = int(usage.get("completion_tokens", len(clock.pieces)))
    out = clock.result(n, 0.0)
    out["whole_s"] = (clock.last or time.perf_counter()) - clock.sent
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--kinds", default="chat,qa,translate,math,summary")
    ap.add_argument("--methods", default="ar,pld,sense")
    ap.add_argument("--spec-types", default="", help="llama-server --spec-type peers beside the plain one, e.g. ngram-mod")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args(argv)

    kinds = args.kinds.split(",")
    tasks = [t for t in build_tasks("quick") if t.kind in kinds]
    path = resolve_model(args.model)
    peers = {PLAIN: None, **{f"{PLAIN}-{s}": s for s in args.spec_types.split(",") if s}}
    results: dict[str, dict[str, list[dict]]] = {}  # side -> task -> its turns
    run = os.urandom(3).hex()  # our server keeps conversations on disk across runs: no turn of an earlier run may match
    with contextlib.ExitStack() as stack:  # a server of ours per method: none finds the turn another read
        serve_args = ("--ctx", str(args.ctx), "--threads", str(args.threads))
        ours = {f"sense-local {m}": (stack.enter_context(serving(args.model, *serve_args)), m)
                for m in args.methods.split(",")}
        servers = {name: LlamaServerPeer(server_binary(), path, spec_type=s, n_ctx=args.ctx, n_threads=args.threads)
                   for name, s in peers.items()}
        try:
            sides = [*ours, *servers]
            for rep in range(args.reps):
                for i, task in enumerate(tasks):
                    messages = [{"role": "system", "content": f"You are a helpful assistant. (Session {run}-{rep + 1}.)"},
                                *task.messages()]
                    for side in sides if (rep + i) % 2 == 0 else reversed(sides):
                        if side in servers:
                            peer = servers[side]
                            if peer.fresh_per_request:
                                peer.restart()
                            r = chat_turn(f"http://127.0.0.1:{peer.port}", messages, args.tokens, {"seed": 0})
                        else:
                            base, method = ours[side]
                            r = chat_turn(base, messages, args.tokens, {"method": method})
                        results.setdefault(side, {}).setdefault(task.name, []).append(r)
                        print(f"rep {rep} {task.name:<28} {side:<26} {r['tokens']:>3} tokens, first text "
                              f"{r['first_token_s']:.2f} s, {r['tok_per_s']:.2f} tok/s, whole {r['whole_s']:.2f} s",
                              file=sys.stderr, flush=True)
        finally:
            for peer in servers.values():
                peer.close()
    report(results, tasks, args)
    return 0


def report(results: dict, tasks, args) -> None:
    med = statistics.median
    plain = results[PLAIN]
    print(f"\n{len(tasks)} turns ({args.kinds}), {args.reps} interleaved reps, {args.tokens} tokens, {args.threads} "
          f"threads; over plain llama-server on the same turn, median over turns (medians of reps):")
    print("| side | first text | decode tok/s | whole wait | same text as llama-server |")
    print("|---|---|---|---|---|")
    for side, by_task in results.items():
        def ratio(key: str) -> float:
            pairs = [(med(r[key] for r in by_task[t.name]), med(r[key] for r in plain[t.name])) for t in tasks]
            return med(a / b for a, b in pairs if a > 0 and b > 0)  # a one-token reply has no decode speed
        same = sum(by_task[t.name][0]["text"].strip() == plain[t.name][0]["text"].strip() for t in tasks)
        first = med(med(r["first_token_s"] for r in by_task[t.name]) for t in tasks)
        print(f"| {side} | {ratio('first_token_s'):.3f}x ({first:.2f} s) | {ratio('tok_per_s'):.3f}x | "
              f"{ratio('whole_s'):.3f}x | {same} of {len(tasks)} |")
    print("(first text and whole wait: time over llama-server's, lower is better; decode: speed over its, higher is better)")


if __name__ == "__main__":
    raise SystemExit(main())
