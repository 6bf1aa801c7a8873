"""What our plain decoding adds between two of llama.cpp's decodes, inside the bench itself.

Runs `sense-local bench` (ar and plain llama-server, interleaved) with every `llama_decode` of this
process timed: a one-token decode's own time, and the time from its end to the next one's start
inside a reply (the step's Python: the loop, the engine, numpy, the bench's consumer), beside
llama-server's whole token (its decode and sampling, from its `timings`). Tails of the decodes too:
a reply's tok/s is a mean, so a slow decode in one of fifty counts.

    python -m benchmarks.step_gap --model test --kinds grounded,chat,summary --reps 4
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sense_local import native

llama_cpp = native.llama_cpp
IN_REPLY = 0.005  # s: a longer pause between two one-token decodes is a reply's end, not a step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="test")
    ap.add_argument("--kinds", default="grounded,chat,summary")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args(argv)

    calls: list[tuple[float, float, int]] = []  # (start, end, batch size) of every llama_decode
    decode = llama_cpp.llama_decode

    def timed(ctx, batch):
        t0 = time.perf_counter()
        rc = decode(ctx, batch)
        calls.append((t0, time.perf_counter(), batch.n_tokens))
        return rc

    llama_cpp.llama_decode = timed  # every caller reads it through the module: all are timed
    from sense_local.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        rc = cli(["bench", "--model", args.model, "--suite", "quick", "--kinds", args.kinds,
                  "--methods", "ar,llama-server", "--reps", str(args.reps), "--json", str(out)])
        if rc:
            return rc
        runs = json.loads(out.read_text())["runs"]
    llama_cpp.llama_decode = decode
    a = np.array(calls)
    one = a[:, 2] == 1
    ms = (a[:, 1] - a[:, 0]) * 1e3
    gaps = (a[1:, 0] - a[:-1, 1]) * 1e3
    steps = gaps[one[:-1] & one[1:] & (gaps < IN_REPLY * 1e3)]
    d = ms[one]
    ours = [1000 / r["tok_per_s"] for r in runs if r["method"] == "ar"]
    theirs = [1000 / r["tok_per_s"] for r in runs if r["method"] == "llama-server"]
    print(f"our one-token llama_decode ({len(d)}): median {np.median(d):.3f} mean {d.mean():.3f} "
          f"p90 {np.percentile(d, 90):.3f} p99 {np.percentile(d, 99):.3f} ms")
    print(f"between two of them in a reply ({len(steps)}): median {np.median(steps):.3f} "
          f"mean {steps.mean():.3f} p99 {np.percentile(steps, 99):.3f} ms")
    print(f"ms a token, mean over {len(ours)} replies: ours {statistics.mean(ours):.3f}, "
          f"llama-server {statistics.mean(theirs):.3f} (ours {statistics.mean(theirs) / statistics.mean(ours):.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
