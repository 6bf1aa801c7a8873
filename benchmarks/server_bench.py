"""Tokens per second through the OpenAI-compatible server vs the CLI on the same prompts, and
first-token latency (`scripts/bench_server`).

Both sides run as their own processes, one at a time (the server waits idle while the CLI runs):
- CLI: `sense-local generate --json`; its decode tok/s and prefill time are the decoder's own.
- server: a streamed `/v1/chat/completions` request; tok/s is measured by the client from the first
  to the last content chunk ((tokens - 1) / that time, the same definition as the decoder's), and the
  first-token latency from sending the request to the first content chunk.
Repetitions are interleaved; medians are reported.
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

from sense_local.bench.llama_server import free_port

PROMPTS = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "Explain in a short paragraph what a hash table is and why lookups are fast.",
    "List five tips for writing clear commit messages.",
]


def _cli(model: str, prompt: str, method: str, tokens: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "sense_local.cli", "generate", prompt, "--model", model, "--method",
                          method, "--max-tokens", str(tokens), "--json"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    return {"tok_per_s": doc["tok_per_s"], "first_token_s": doc["time"]["prefill"], "tokens": doc["tokens"],
            "text": doc["text"]}


def _server_request(base: str, prompt: str, method: str, tokens: int) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "method": method, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    text, usage, reported = [], None, None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            doc = json.loads(line[6:])
            usage = doc.get("usage") or usage
            reported = doc.get("sense") or reported
            for c in doc.get("choices", []):
                piece = c.get("delta", {}).get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(piece)
    n = usage["completion_tokens"]
    return {"tok_per_s": (n - 1) / (last - first) if n > 1 and last > first else 0.0, "first_token_s": first - t0,
            "tokens": n, "text": "".join(text), "server_tok_per_s": reported["tok_per_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--methods", default="ar,pld")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", dest="json_file")
    args = ap.parse_args(argv)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "serve", "--model", args.model, "--port",
                               str(port)], stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        rows = {}
        _server_request(base, "Say hi.", "pld", 8)  # warm: the cost curve is measured once per model
        for rep in range(args.reps):
            for method in args.methods.split(","):
                for i, prompt in enumerate(PROMPTS):
                    order = ("cli", "server") if (rep + i) % 2 == 0 else ("server", "cli")
                    for side in order:
                        r = _cli(args.model, prompt, method, args.tokens) if side == "cli" else \
                            _server_request(base, prompt, method, args.tokens)
                        rows.setdefault((method, side), []).append(r)
                        print(f"rep {rep} {method:<6} {side:<6} prompt {i}: {r['tokens']} tokens, "
                              f"{r['tok_per_s']:.2f} tok/s, first token {r['first_token_s']:.3f} s", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(30)
    print(f"\n| method | CLI tok/s | server tok/s | server/CLI | CLI first token (prefill) | server first token |")
    print("|---|---|---|---|---|---|")
    result = {}
    for method in args.methods.split(","):
        cli, srv = rows[(method, "cli")], rows[(method, "server")]
        c = statistics.median(r["tok_per_s"] for r in cli)
        s = statistics.median(r["tok_per_s"] for r in srv)
        fc = statistics.median(r["first_token_s"] for r in cli)
        fs = statistics.median(r["first_token_s"] for r in srv)
        same = sum(a["text"] == b["text"] for a, b in zip(cli, srv))
        result[method] = {"cli_tok_per_s": c, "server_tok_per_s": s, "ratio": s / c, "cli_first_token_s": fc,
                          "server_first_token_s": fs, "same_text": f"{same}/{len(cli)}"}
        print(f"| {method} | {c:.2f} | {s:.2f} | {s / c:.3f}x | {fc:.3f} s | {fs:.3f} s |  (same text {same}/{len(cli)})")
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
