"""What a reply-history search costs beside a decode, by history size (issue 31: the default cap is
sized so a search stays under 2% of a one-token decode).

Real key states of the model (Python's reference-doc topics read with key states, 512 tokens a
"reply") fill a ReplyHistory in a temporary folder; at each size a k-NN search as SENSE runs it
(k 8, 33-token continuations; each query a stored state moved a little) is timed, beside a
one-token decode of the same model, and the append of one 128-token reply.

    python -m benchmarks.history_search_cost --model default
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sense_local.engine import Engine
from sense_local.registry import resolve_model
from sense_local.reply_history import ReplyHistory

SIZES = (4_096, 8_192, 16_384, 32_768)
REPLY = 512  # tokens per stored "reply"


def real_keys(engine: Engine, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], key states [n, n_embd]) of pydoc topics, read REPLY tokens at a time."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    tokens = np.asarray(engine.tokenize(text, add_special=False)[:n], np.int32)
    keys = []
    for start in range(0, len(tokens), REPLY):
        engine.reset()
        out = engine.eval(tokens[start : start + REPLY], 0, outputs="keys", with_keys=True)
        keys.append(np.array(out.keys, np.float32))
    return tokens, np.concatenate(keys)


def one_token_decode_ms(engine: Engine, reps: int = 20) -> float:
    engine.reset()
    engine.eval([1] * 256, 0, outputs="last", with_keys=False)
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        engine.eval([2], 256 + i, outputs="last", with_keys=False)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=4096)
    decode_ms = one_token_decode_ms(engine)
    tokens, keys = real_keys(engine, max(SIZES))
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        history = ReplyHistory.open(engine, directory=Path(tmp) / "h", cap_tokens=max(SIZES) * 2)
        have = 0
        try:
            for size in SIZES:
                while have < size and have < len(tokens):
                    end = min(have + REPLY, len(tokens))
                    history.append(tokens[have:end], keys[have : end - 1])
                    have = end
                history.flush()
                picks = rng.integers(0, have - 1, 200)
                queries = keys[picks] + 0.05 * rng.standard_normal((200, engine.n_embd)).astype(np.float32) * keys[picks].std()
                t0 = time.perf_counter()
                for q in queries:
                    history.search(q, 8, 33)
                search_ms = 1000 * (time.perf_counter() - t0) / len(queries)
                t0 = time.perf_counter()
                history.append(tokens[:128], keys[:127])
                history.flush()
                append_ms = 1000 * (time.perf_counter() - t0)
                rows.append({"vectors": history.n_vectors, "search_ms": round(search_ms, 3),
                             "share_of_decode": round(search_ms / decode_ms, 4), "append_128_ms": round(append_ms, 1),
                             "disk_mib": round(history.store.disk_bytes() / 2**20, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            history.close()
    result = {"model": engine.path.name if hasattr(engine.path, "name") else str(engine.path),
              "one_token_decode_ms": round(decode_ms, 2), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
