"""What llama.cpp RPC costs: the model on this machine alone beside the same model split over two
`sense-local rpc-worker`s on loopback and the local CPU, in one run, interleaved.

Measured per engine: the median time of a one-token decode (plain decoding's step: what each hop adds)
and of an 8-token decode (a draft's verification), then whole replies with `ar` and with a speculative
method (tok/s, median over the prompts and reps). Loopback has no wire: what it shows is the RPC
protocol's own cost (serialising, the graph split per device, a round trip per device per decode), the
floor of what a real network adds on top of its latency.
Run: `python -m benchmarks.rpc_bench [--model M] [--reps 3] [--method pld] [--tokens 128]`."""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time

from sense_local.chat_template import chat_tokens
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model

PROMPTS = ["Explain what a hash table is and when to use one.",
           "Write a Python function that parses a date like 2024-03-01 and returns the weekday.",
           "Summarise the rules of chess in five sentences."]


def start_worker() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "rpc-worker", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"worker on port {port} did not start")


def decode_times(engine: Engine, prompt: list[int], k: int, reps: int = 16) -> float:
    """Median seconds of a k-token decode after `prompt` (the tokens are then dropped again)."""
    engine.prefill(prompt)
    base = engine.n_past
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.eval(prompt[-k:], base, outputs="all", with_keys=False)
        times.append(time.perf_counter() - t0)
        engine.truncate(base)
    return statistics.median(times)


def reply_speed(engine: Engine, prompt: list[int], method: str, tokens: int) -> float:
    decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=tokens))
    t0 = time.perf_counter()
    n = sum(1 for e in decoder.generate(prompt, tokens) if e.token >= 0)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="rpc_bench", description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--method", default="pld", help="the speculative method measured beside ar")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args(argv)
    path = resolve_model(args.model)
    workers = [start_worker() for _ in range(2)]
    try:
        local = Engine(path, n_ctx=2048)
        split = Engine(path, n_ctx=2048, rpc=",".join(w[1] for w in workers))
        engines = {"local": local, "rpc": split}
        print(f"model {path.name}, {local.n_threads} threads; rpc: {split.placement.describe()}")
        prompts = [chat_tokens(local, [{"role": "user", "content": p}]) for p in PROMPTS]
        results: dict[str, dict[str, list[float]]] = {name: {} for name in engines}
        for _ in range(args.reps):
            for name, engine in engines.items():  # interleaved: load on the machine hits both alike
                r = results[name]
                r.setdefault("decode1", []).append(decode_times(engine, prompts[0], 1))
                r.setdefault("decode8", []).append(decode_times(engine, prompts[0], 8))
                for method in ("ar", args.method):
                    r.setdefault(method, []).extend(reply_speed(engine, p, method, args.tokens) for p in prompts)
        med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
        for name, m in med.items():
            print(f"{name:>5}: 1-token decode {m['decode1'] * 1e3:6.1f} ms, 8-token decode {m['decode8'] * 1e3:6.1f} ms, "
                  f"ar {m['ar']:5.1f} tok/s, {args.method} {m[args.method]:5.1f} tok/s")
        added = med["rpc"]["decode1"] - med["local"]["decode1"]
        print(f"two loopback workers add {added * 1e3:.1f} ms to each one-token decode ({added * 1e3 / 2:.1f} ms per "
              f"worker); ar {med['rpc']['ar'] / med['local']['ar']:.2f}x, {args.method} "
              f"{med['rpc'][args.method] / med['local'][args.method]:.2f}x of local")
        split.close()
        local.close()
    finally:
        for proc, _ in workers:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
