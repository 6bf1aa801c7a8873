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

import json
import statistics
import subprocess
import sys

from benchmarks.stream_timing import arguments, interleaved, openai_request, serving


def _cli(model: str, prompt: str, method: str, tokens: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "sense_local.cli", "generate", prompt, "--model", model, "--method",
                          method, "--max-tokens", str(tokens), "--json", "--no-history"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    return {"tok_per_s": doc["tok_per_s"], "first_token_s": doc["time"]["prefill"], "tokens": doc["tokens"],
            "text": doc["text"]}


def main(argv=None) -> int:
    ap = arguments(__doc__.split("\n")[0])
    ap.add_argument("--json", dest="json_file")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    with serving(args.model) as base:
        sides = {"cli": lambda prompt, method: _cli(args.model, prompt, method, args.tokens),
                 "server": lambda prompt, method: openai_request(base, prompt, method, args.tokens)}
        rows = interleaved(sides, methods, args.reps, method_width=6)
    print(f"\n| method | CLI tok/s | server tok/s | server/CLI | CLI first token (prefill) | server first token |")
    print("|---|---|---|---|---|---|")
    result = {}
    for method in methods:
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
