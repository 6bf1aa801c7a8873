"""Tokens per second and first-token latency through Ollama's /api/chat beside OpenAI's
/v1/chat/completions, on one `sense-local serve` (the same runtime and queue behind both):

    .venv/bin/python -m benchmarks.ollama_bench [--model default] [--methods ar,pld] [--tokens 96] [--reps 2]

Both are streamed, greedy, the same prompts (stream_timing.py's), repetitions interleaved, the routes'
order alternating; tok/s is measured by the client from the first to the last content piece
((tokens - 1) / that time, the decoder's own definition), the first token from sending the request.
Medians are reported, with how many replies had the same text through both routes.
"""
from __future__ import annotations

import json
import statistics
import urllib.request

from benchmarks.stream_timing import StreamClock, arguments, interleaved, openai_request, serving


def _ollama_request(base: str, prompt: str, method: str, tokens: int) -> dict:
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}], "method": method,
            "options": {"temperature": 0, "num_predict": tokens}}
    req = urllib.request.Request(base + "/api/chat", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    clock = StreamClock()
    closing = {}
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            doc = json.loads(raw)
            piece = doc.get("message", {}).get("content")
            if piece:
                clock.piece(piece)
            if doc.get("done"):
                closing = doc
    return clock.result(closing["eval_count"], closing["sense"]["tok_per_s"])


def main(argv=None) -> int:
    args = arguments(__doc__.split("\n")[0]).parse_args(argv)
    with serving(args.model) as base:
        sides = {"openai": lambda prompt, method: openai_request(base, prompt, method, args.tokens),
                 "ollama": lambda prompt, method: _ollama_request(base, prompt, method, args.tokens)}
        rows = interleaved(sides, args.methods.split(","), args.reps, method_width=4)
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
