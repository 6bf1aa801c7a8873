"""Tokens per second and first-token latency through Ollama's /api/chat beside OpenAI's
/v1/chat/completions, on one `sense-local serve` (the same runtime and queue behind both):

    .venv/bin/python -m benchmarks.ollama_bench [--model default] [--methods ar,pld] [--tokens 96] [--reps 2]

Both are streamed, greedy, the same prompts (server_bench's), repetitions interleaved, the routes'
order alternating; tok/s is measured by the client from the first to the last content piece
((tokens - 1) / that time, the decoder's own definition), the first token from sending the request.
Medians are reported, with how many replies had the same text through both routes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

from benchmarks.server_bench import PROMPTS, _server_request
from sense_local.bench.llama_server import free_port


def _ollama_request(base: str, prompt: str, method: str, tokens: int) -> dict:
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}], "method": method,
            "options": {"temperature": 0, "num_predict": tokens}}
    req = urllib.request.Request(base + "/api/chat", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    text, closing = [], {}
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            doc = json.loads(raw)
            piece = doc.get("message", {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(piece)
            if doc.get("done"):
                closing = doc
    n = closing["eval_count"]
    return {"tok_per_s": (n - 1) / (last - first) if n > 1 and last > first else 0.0, "first_token_s": first - t0,
            "tokens": n, "text": "".join(text), "server_tok_per_s": closing["sense"]["tok_per_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", default="ar,pld")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "serve", "--model", args.model, "--port",
                               str(port)], stderr=subprocess.DEVNULL, env=os.environ.copy())
    sides = {"openai": _server_request, "ollama": _ollama_request}
    rows: dict = {}
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        _server_request(base, "Say hi.", "pld", 8)  # warm: the cost curve is measured once per model
        for rep in range(args.reps):
            for method in args.methods.split(","):
                for i, prompt in enumerate(PROMPTS):
                    order = ("openai", "ollama") if (rep + i) % 2 == 0 else ("ollama", "openai")
                    for side in order:
                        r = sides[side](base, prompt, method, args.tokens)
                        rows.setdefault((method, side), []).append(r)
                        print(f"rep {rep} {method:<4} {side:<6} prompt {i}: {r['tokens']} tokens, "
                              f"{r['tok_per_s']:.2f} tok/s, first token {r['first_token_s']:.3f} s", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(30)
    print("\n| method | /v1 tok/s | /api tok/s | /api / /v1 | /v1 first token | /api first token | same text |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        oa, ol = rows[(method, "openai")], rows[(method, "ollama")]
        a, b = (statistics.median(r["tok_per_s"] for r in side) for side in (oa, ol))
        fa, fb = (statistics.median(r["first_token_s"] for r in side) for side in (oa, ol))
        same = sum(x["text"] == y["text"] for x, y in zip(oa, ol))
        print(f"| {method} | {a:.2f} | {b:.2f} | {b / a:.3f}x | {fa:.3f} s | {fb:.3f} s | {same}/{len(oa)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
