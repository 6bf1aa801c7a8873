"""Plain greedy decoding: our low-level loop vs `Llama.create_completion(temperature=0)`.

    python -m benchmarks.engine_bench [--model PATH] [--tokens 128] [--reps 3]

Same model, same chat prompts, runs interleaved; reports tok/s (decode phase) and the ratio.
"""
from __future__ import annotations

import argparse
import statistics

from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine, default_threads
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.bench.peers import LlamaCppPeer

PROMPTS = [
    "Explain how a hash table works.",
    "Write a short poem about autumn leaves.",
    "What are the main causes of inflation?",
    "Describe the water cycle for a ten-year-old.",
    "Give me five tips for writing clean Python code.",
    "Summarise the plot of a detective story of your own invention.",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=default_threads())
    args = ap.parse_args(argv)

    path = resolve_model(args.model)
    engine = Engine(path, n_ctx=2048, n_threads=args.threads)
    peers = {
        "same threads": LlamaCppPeer(path, n_ctx=2048, n_threads=args.threads),
        "its defaults": LlamaCppPeer(path, n_ctx=2048, n_threads=None),
    }
    options = GenerationOptions(method="ar", max_tokens=args.tokens)
    decode = {"ours": [], **{k: [] for k in peers}}  # tok/s after the first token, per prompt
    wall = {"ours": [], **{k: [] for k in peers}}  # seconds for the whole call, prompt evaluated afresh
    for text in PROMPTS:
        prompt = chat_tokens(engine, [{"role": "user", "content": text}])
        runs = {k: ([], []) for k in decode}
        for _ in range(args.reps):  # interleaved: drift on a shared machine hits all alike
            engine.reset()
            decoder = make_decoder(engine, options)
            for _ in decoder.generate(prompt, args.tokens):
                pass
            s = decoder.stats
            runs["ours"][0].append(s.tok_per_s)
            runs["ours"][1].append(s.t_prefill + s.t_total)
            for name, peer in peers.items():
                r = peer.run(prompt, args.tokens, fresh=True)
                runs[name][0].append(r.tok_per_s)
                runs[name][1].append(r.wall)
        for k, (d, w) in runs.items():
            decode[k].append(statistics.median(d))
            wall[k].append(statistics.median(w))
        print(
            f"{text[:40]:<40} decode tok/s: ours {decode['ours'][-1]:6.1f}, "
            + ", ".join(f"peer({k}) {decode[k][-1]:6.1f}" for k in peers)
        )
    print(f"\nmedian over {len(PROMPTS)} prompts, {args.tokens} new tokens, {args.reps} interleaved reps, "
          f"our threads {args.threads}:")
    for k in peers:
        speed = [a / b for a, b in zip(decode["ours"], decode[k])]
        e2e = [b / a for a, b in zip(wall["ours"], wall[k])]
        print(
            f"  vs create_completion ({k}, {peers[k].llm.n_threads} threads): decode tok/s ratio "
            f"{statistics.median(speed):.2f}x (ours {statistics.median(decode['ours']):.1f} vs "
            f"{statistics.median(decode[k]):.1f}); end-to-end speed ratio {statistics.median(e2e):.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
