"""Where a plain (greedy, one token per decode) reply's time goes: ours layer by layer, beside llama.cpp's
own server decoding the same context (`scripts/profile_decode`).

For each prompt, interleaved reps of:
  llama-server   its `timings.predicted_per_second` (C++ all the way, its sampler chain included)
  decode         `llama_decode` + argmax on our engine's context, nothing else (context set-up + ctypes)
  engine         `Engine.eval_one(token)` + argmax: plain decoding's step (the loop's, without a draft)
  loop           the speculative loop with no drafter (`ar`): events, detokenizing, stats
  conversation   `Conversation.complete`: the runtime every front end renders (stop strings, events)
Each row gives decode tok/s (tokens after the first over the time after the first), ms per token, and
what the layer adds over the one before it. Then the prefill: a --prefill-tokens prompt (pydoc text)
evaluated afresh by our engine and by llama-server, interleaved: prompt tok/s and the first-token time.

    python -m benchmarks.decode_profile --model default --tokens 128 --reps 3 --prefill-tokens 1500
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sense_local import native
from sense_local.bench.llama_server import LlamaServerPeer, server_binary
from sense_local.bench.runner import fresh_prefills
from sense_local.chat_template import chat_tokens
from sense_local.conversation import Conversation, ConversationConfig
from sense_local.engine import Engine, default_threads
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model

llama_cpp = native.llama_cpp

PROMPTS = [
    "Explain how a hash table works.",
    "What are the main causes of inflation?",
    "Give me five tips for writing clean Python code.",
]
LAYERS = ("llama-server", "decode", "engine", "loop", "conversation")


def raw_decode(engine: Engine, prompt: list[int], n: int) -> float:
    """tok/s of llama_decode + argmax alone, on the engine's own context and batch."""
    out = engine.prefill(prompt, outputs="last", with_keys=False)
    tok = int(np.argmax(out.logits[-1]))
    ctx, batch, nv = engine._ctx, engine._batch, engine.n_vocab
    pos = engine.n_past
    batch.logits[0] = 1
    t0 = time.perf_counter()
    for _ in range(n - 1):
        batch.token[0], batch.pos[0] = tok, pos
        batch.raw.n_tokens = 1
        if llama_cpp.llama_decode(ctx, batch.raw) != 0:
            raise RuntimeError("llama_decode failed")
        tok = int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(1, nv))[0]))
        pos += 1
    dt = time.perf_counter() - t0
    engine.truncate(len(prompt))  # what was decoded here never entered engine.tokens: drop its KV
    llama_cpp.llama_memory_seq_rm(engine._mem, 0, len(prompt), -1)
    return (n - 1) / dt


def engine_decode(engine: Engine, prompt: list[int], n: int) -> float:
    out = engine.prefill(prompt, outputs="last", with_keys=False)
    tok = int(np.argmax(out.logits[-1]))
    t0 = time.perf_counter()
    for _ in range(n - 1):
        tok = int(engine.eval_one(tok).logits[0].argmax())
    dt = time.perf_counter() - t0
    engine.truncate(len(prompt))
    return (n - 1) / dt


def loop_decode(engine: Engine, prompt: list[int], n: int) -> float:
    decoder = make_decoder(engine, GenerationOptions(method="ar", max_tokens=n))
    for _ in decoder.generate(prompt, n):
        pass
    return decoder.stats.tok_per_s


def conversation_decode(conv: Conversation, text: str, n: int) -> float:
    options = GenerationOptions(method="ar", max_tokens=n)
    finished = [ev for ev in conv.complete(text, options=options) if type(ev).__name__ == "Finished"]
    return finished[0].stats.tok_per_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--prefill-tokens", type=int, default=1500, help="prompt length of the prefill comparison (0: none)")
    args = ap.parse_args(argv)

    path = resolve_model(args.model)
    engine = Engine(path, n_ctx=args.ctx, n_threads=args.threads)
    conv = Conversation(engine, config=ConversationConfig())
    server = LlamaServerPeer(server_binary(), path, spec_type=None, n_ctx=args.ctx, n_threads=args.threads)
    speeds: dict[str, list[float]] = {k: [] for k in LAYERS}  # per prompt: median over reps
    try:
        for text in PROMPTS:
            # raw text through the chat template once, so every layer decodes the same tokens
            templated = engine.detokenize(chat_tokens(engine, [{"role": "user", "content": text}]))
            prompt = engine.tokenize(templated, add_special=True, parse_special=True)
            runs: dict[str, list[float]] = {k: [] for k in LAYERS}
            for _ in range(args.reps):
                r = server.run(prompt, args.tokens)
                runs["llama-server"].append(r.tok_per_s)
                runs["decode"].append(raw_decode(engine, prompt, args.tokens))
                runs["engine"].append(engine_decode(engine, prompt, args.tokens))
                runs["loop"].append(loop_decode(engine, prompt, args.tokens))
                runs["conversation"].append(conversation_decode(conv, templated, args.tokens))
            for k, v in runs.items():
                speeds[k].append(statistics.median(v))
            print(f"{text[:40]:<40} " + ", ".join(f"{k} {speeds[k][-1]:.2f}" for k in LAYERS), flush=True)
        prefill = compare_prefill(engine, server, args.prefill_tokens, args.reps) if args.prefill_tokens else None
    finally:
        server.close()
    print(f"\nmedian over {len(PROMPTS)} prompts x {args.reps} interleaved reps, {args.tokens} tokens, "
          f"{args.threads} threads, {path.name}:")
    print(f"{'layer':<14} {'tok/s':>7} {'ms/token':>9} {'adds (ms)':>10} {'vs llama-server':>16}")
    ref = statistics.median(speeds["llama-server"])
    previous = None
    for k in LAYERS:
        tps = statistics.median(speeds[k])
        ms = 1000 / tps
        adds = "" if previous is None else f"{ms - previous:+.2f}"
        print(f"{k:<14} {tps:7.2f} {ms:9.2f} {adds:>10} {tps / ref:15.3f}x")
        previous = ms
    if prefill:
        n, ours, theirs = prefill
        print(f"\nprefill of a {n}-token prompt, afresh, median of {args.reps} interleaved reps: ours {ours:.1f} vs "
              f"llama-server {theirs:.1f} prompt tok/s ({ours / theirs:.3f}x); first token after "
              f"{n / ours:.2f} vs {n / theirs:.2f} s")
    return 0


def compare_prefill(engine: Engine, server: LlamaServerPeer, n: int, reps: int) -> tuple[int, float, float]:
    """(prompt tokens, our prompt tok/s, llama-server's): medians of interleaved fresh prefills."""
    from pydoc_data.topics import topics

    text = "Summarise:\n" + "".join(topics[t] for t in ("assert", "with", "try", "for", "while", "if", "import"))
    prompt = chat_tokens(engine, [{"role": "user", "content": text}])[:n]
    ours, theirs = fresh_prefills(engine, server, prompt, reps)
    return len(prompt), statistics.median(ours), statistics.median(theirs) if theirs else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
