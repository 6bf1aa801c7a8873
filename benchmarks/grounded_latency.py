"""The wait before the first word, per turn of a conversation, through the server as a client sees
it (`scripts/bench_latency`).

`sense-local serve --store` runs on our own documents (the pydoc reference topics, the store the
retrieval benchmark builds), and the `openai` client holds 4-turn conversations with it, streamed:
grounded (passages retrieved into every question) and plain (`"grounded": false`), each alone and
with a second client's request between its turns (what Open WebUI sends after every message: a
title request naming the conversation in one message). Per turn: the time from sending the request
to the first content chunk, the server's own prefill time, the prompt's tokens and how many of them
were reused (`usage.prompt_tokens_details.cached_tokens`). Each conversation gets a fresh server (after
one warm-up request) and a folder of kept states of its own, so its first turn's prefill is the time
to prefill that prompt alone.

`--reopen` then asks each grounded conversation a fifth question after a restart, as a client does
when a chat is reopened the next day: the server is stopped, a new one started on the same kept
states (kv_disk.py), and the whole conversation sent back with the new question; and again on a
server started with `--cache-disk 0` (every token evaluated). Per conversation: both first-token
times and their ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sense_local.bench.llama_server import free_port

CONVERSATION = [
    "What does the with statement do?",
    "What do the __enter__ and __exit__ methods of a context manager do?",
    "Can one with statement manage several context managers at once?",
    "What happens when __exit__ returns a true value?",
]
REOPENED = "Can a generator function serve as a context manager?"  # asked after a restart (--reopen)
TITLE_REQUEST = ("Create a concise, 3-5 word title with an emoji for the chat history below.\n\n"
                 "<chat_history>\nUSER: {question}\nASSISTANT: {answer}\n</chat_history>")


def build_store(model: str) -> Path:
    """The pydoc all-topics store of `model` (built once, then cached), built in a child process so
    that this one holds no model while the server runs."""
    code = ("import sys; from sense_local.engine import Engine; from sense_local.registry import resolve_model; "
            "from sense_local.bench.stores import pydoc_store; from benchmarks.doc_questions import corpus_topics; "
            "e = Engine(resolve_model(sys.argv[1])); s = pydoc_store(e, 'all-topics', corpus_topics()); "
            "print(s.dir)")
    out = subprocess.run([sys.executable, "-c", code, model], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return Path(out.stdout.strip().splitlines()[-1])


class Server:
    def __init__(self, model: str, store: Path, max_tokens: int, extra: list[str], states: Path, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sense_local.cli", "serve", "--model", model, "--store", str(store),
             "--port", str(self.port), "--max-tokens", str(max_tokens), "--no-history", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SENSE_KV_STATES": str(states), **(env or {})})  # kept conversations: this run's own
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/health", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
                time.sleep(0.5)
        raise RuntimeError("server did not come up")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def turn(client, messages: list[dict], grounded: bool, max_tokens: int) -> dict:
    """One streamed turn: first-token time, the reply, usage and the server's figures."""
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model="default", messages=messages, max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"grounded": grounded})
    first, parts, usage, sense = None, [], None, {}
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(chunk.choices[0].delta.content)
        extra = chunk.model_extra or {}
        sense = extra.get("sense") or sense
        if chunk.usage is not None:
            usage = chunk.usage
    details = getattr(usage, "prompt_tokens_details", None)
    return {"first_token_s": round(first or time.perf_counter() - t0, 3), "text": "".join(parts),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "cached_tokens": getattr(details, "cached_tokens", None) if details else None,
            "prefill_s": sense.get("prefill_s"), "total_s": round(time.perf_counter() - t0, 3)}


def conversation(client, grounded: bool, interleaved: bool, max_tokens: int, messages: list[dict]) -> list[dict]:
    """The 4 turns (their messages appended to `messages`), a row each."""
    rows = []
    for i, question in enumerate(CONVERSATION, 1):
        messages.append({"role": "user", "content": question})
        row = turn(client, messages, grounded, max_tokens)
        messages.append({"role": "assistant", "content": row["text"]})
        row["turn"] = i
        rows.append(row)
        if interleaved:  # another client's request before the next turn
            title = TITLE_REQUEST.format(question=question, answer=row["text"][:400])
            turn(client, [{"role": "user", "content": title}], False, 16)
    return rows


LAYOUTS = {"plain": "1", "repacked": "0"}  # --layouts: SENSE_PLAIN_LAYOUT for the server (plain_layout.py)


def run(args) -> dict:
    store = build_store(args.model)
    results = {"model": args.model, "max_tokens": args.max_tokens, "modes": {}, "reopened": {}}
    runs = [(mode, None) for mode in args.modes]
    if args.layouts:  # each conversation on each weight layout, the order alternating from one to the next
        runs = [(mode, layout) for i, mode in enumerate(args.modes)
                for layout in (args.layouts if i % 2 == 0 else args.layouts[::-1])]
    for mode, layout in runs:  # a fresh server and kept states each: no conversation starts from another's
        grounded, interleaved = mode.startswith("grounded"), mode.endswith("+other")
        env = {"SENSE_PLAIN_LAYOUT": LAYOUTS[layout]} if layout else None
        mode = f"{mode} [{layout}]" if layout else mode
        with tempfile.TemporaryDirectory() as states:
            messages: list[dict] = []
            with serving(args, store, Path(states), env=env) as client:
                rows = conversation(client, grounded, interleaved, args.max_tokens, messages)
            results["modes"][mode] = rows
            print(f"{mode}: " + ", ".join(f"t{r['turn']} {r['first_token_s']:.2f}s (prefill {r['prefill_s']:.2f}s, "
                                          f"{r['cached_tokens']}/{r['prompt_tokens']} cached)" for r in rows),
                  file=sys.stderr)
            if args.reopen and grounded:
                messages.append({"role": "user", "content": REOPENED})
                reopened = {}
                for label, extra in (("kept state", []), ("--cache-disk 0", ["--cache-disk", "0"])):
                    with serving(args, store, Path(states), extra, env=env) as client:
                        reopened[label] = turn(client, messages, True, args.max_tokens)
                results["reopened"][mode] = reopened
                print(f"{mode} reopened: " + ", ".join(f"{k} {r['first_token_s']:.2f}s ({r['cached_tokens']}/"
                                                       f"{r['prompt_tokens']} cached)" for k, r in reopened.items()),
                      file=sys.stderr)
    return results


@contextlib.contextmanager
def serving(args, store: Path, states: Path, extra: list[str] = (), env: dict | None = None):
    """A fresh server (kept conversations in `states`, `env` added to its environment), warmed up:
    the `openai` client for it."""
    from openai import OpenAI

    server = Server(args.model, store, args.max_tokens, [*args.serve_args, *extra], states, env)
    try:
        client = OpenAI(base_url=server.base + "/v1", api_key="none")
        turn(client, [{"role": "user", "content": "Say hi."}], False, 4)  # warm-up: first decode, caches
        yield client
    finally:
        server.close()


def table(results: dict) -> str:
    lines = ["| conversation | turn 1 | turn 2 | turn 3 | turn 4 |", "|---|---|---|---|---|"]
    for mode, rows in results["modes"].items():
        cells = [f"{r['first_token_s']:.2f} s ({r['cached_tokens']}/{r['prompt_tokens']})" for r in rows]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    lines.append("\nfirst-token time (prompt tokens reused / prompt tokens); turn 1 over its own prefill: "
                 + ", ".join(f"{mode} {rows[0]['first_token_s'] / rows[0]['prefill_s']:.2f}x"
                             for mode, rows in results["modes"].items() if rows[0]["prefill_s"]))
    for mode, reopened in results.get("reopened", {}).items():
        kept, cold = reopened["kept state"], reopened["--cache-disk 0"]
        lines.append(f"{mode}, a fifth question after a restart: {kept['first_token_s']:.2f} s from the kept state "
                     f"({kept['cached_tokens']}/{kept['prompt_tokens']}) against {cold['first_token_s']:.2f} s "
                     f"evaluating it all ({cold['cached_tokens']}/{cold['prompt_tokens']}): "
                     f"{cold['first_token_s'] / kept['first_token_s']:.1f}x sooner")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--modes", default="grounded,grounded+other,plain,plain+other",
                    help="conversations to hold, in order (grounded|plain, +other: a second client between turns)")
    ap.add_argument("--reopen", action="store_true",
                    help="then ask each grounded conversation a fifth question after a restart, "
                         "from its kept state and without")
    ap.add_argument("--layouts", default="",
                    help="plain,repacked: hold each conversation on both weight layouts (plain_layout.py), "
                         "the order alternating; default: the server's own choice")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("serve_args", nargs="*", help="more `sense-local serve` arguments (after --)")
    args = ap.parse_args(argv)
    args.modes = args.modes.split(",")
    args.layouts = [x for x in args.layouts.split(",") if x]
    unknown = [x for x in args.layouts if x not in LAYOUTS]
    if unknown:
        ap.error(f"unknown layout {unknown[0]!r} (plain, repacked)")
    results = run(args)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
