"""Streamed replies of one `sense-local serve` timed as their client sees them: the part server_bench
(the OpenAI route beside the CLI) and ollama_bench (Ollama's route beside OpenAI's) share.

tok/s is measured by the client from the first to the last piece of text ((tokens - 1) / that time,
the decoder's own definition), the first-token latency from sending the request; the sides being
compared run one at a time on the same prompts, repetitions interleaved, their order alternating."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sense_local.bench.llama_server import free_port

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain in a short paragraph what a hash table is and why lookups are fast.",
    "List five tips for writing clear commit messages.",
]


def arguments(description: str) -> argparse.ArgumentParser:
    """The options both benchmarks take: the model served, the methods compared, reply length, reps."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", default="ar,pld")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=2)
    return ap


@dataclass
class StreamClock:
    """When the pieces of a streamed reply arrived. Made as its request goes out."""

    sent: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None
    pieces: list[str] = field(default_factory=list)

    def piece(self, text: str) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now
        self.pieces.append(text)

    def take(self, doc: dict) -> None:
        """The text pieces of one streamed chat chunk (OpenAI's shape)."""
        for choice in doc.get("choices", []):
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.piece(text)

    def result(self, tokens: int, server_tok_per_s: float) -> dict:
        """The reply's figures as the client saw them, beside the speed the server reported."""
        speed = (tokens - 1) / (self.last - self.first) if tokens > 1 and self.last > self.first else 0.0
        return {"tok_per_s": speed, "first_token_s": self.first - self.sent, "tokens": tokens,
                "text": "".join(self.pieces), "server_tok_per_s": server_tok_per_s}


def chat_stream(base: str, body: dict, timeout: float = 600) -> Iterator[dict]:
    """POST `body` to the server's /v1/chat/completions: each server-sent event's object, in order."""
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                yield json.loads(line[6:])


def openai_request(base: str, prompt: str, method: str, tokens: int) -> dict:
    """A streamed, greedy /v1/chat/completions turn, timed."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "method": method, "stream_options": {"include_usage": True}}
    clock = StreamClock()
    usage, reported = None, None
    for doc in chat_stream(base, body):
        usage = doc.get("usage") or usage
        reported = doc.get("sense") or reported
        clock.take(doc)
    return clock.result(usage["completion_tokens"], reported["tok_per_s"])


@contextlib.contextmanager
def serving(model: str, *serve_args: str) -> Iterator[str]:
    """A `sense-local serve` of `model` (with `serve_args`, e.g. "--ctx", "4096") on a free port, up
    and warm: its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "serve", "--model", model, "--port",
                               str(port), "--no-history", *serve_args], stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        openai_request(base, "Say hi.", "pld", 8)  # warm: the cost curve is measured once per model
        yield base
    finally:
        server.terminate()
        server.wait(30)


def interleaved(sides: dict[str, Callable[[str, str], dict]], methods: list[str], reps: int,
                method_width: int) -> dict[tuple[str, str], list[dict]]:
    """Each side's result per (method, side), every prompt in every rep; the sides' order alternates
    (the first-named first on even prompt + rep). Progress on stderr."""
    first, second = sides
    rows: dict = {}
    for rep in range(reps):
        for method in methods:
            for i, prompt in enumerate(PROMPTS):
                for side in (first, second) if (rep + i) % 2 == 0 else (second, first):
                    r = sides[side](prompt, method)
                    rows.setdefault((method, side), []).append(r)
                    print(f"rep {rep} {method:<{method_width}} {side:<6} prompt {i}: {r['tokens']} tokens, "
                          f"{r['tok_per_s']:.2f} tok/s, first token {r['first_token_s']:.3f} s", file=sys.stderr)
    return rows
