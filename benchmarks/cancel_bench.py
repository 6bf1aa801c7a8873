"""How fast Esc stops a long prefill, and what polling for it costs: a ~740-token prompt is prefilled
with and without a cancel event (never set), interleaved, then cancelled at random moments of its
prefill; the stop latency is the time from the event being set to `Cancelled` being raised.
Then a reply is cancelled while it streams (a draft's verification polls the flag mid-decode; a
one-token step runs to its end), and the reply's speed is compared with and without a cancel event
(the hook's cost on every multi-token decode).
Run: `python -m benchmarks.cancel_bench [--model M] [--reps 3] [--cancels 8] [--method pld]`."""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time

from sense_local.engine import Engine
from sense_local.errors import Cancelled
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.registry import resolve_model
from sense_local.speculative.methods import DEFAULT_METHOD


class TimedCancel:
    """A cancel event that notes when it was set (from a timer thread, as Esc would be)."""

    def __init__(self):
        self.event = threading.Event()
        self.set_at: float | None = None

    def fire(self) -> None:
        self.set_at = time.perf_counter()
        self.event.set()

    def latency(self) -> float:
        return time.perf_counter() - self.set_at


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cancel_bench", description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cancels", type=int, default=8)
    parser.add_argument("--method", default=DEFAULT_METHOD, help="decoding method of the reply that is cancelled")
    args = parser.parse_args(argv)
    engine = Engine(resolve_model(args.model), n_ctx=2048)
    text = "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 70
    prompt = engine.tokenize(text)
    print(f"model {engine.path.name}, prompt {len(prompt)} tokens")
    full = _prefill_times(engine, prompt, args.reps)
    rng = random.Random(0)  # one sequence for both kinds of cancel, in this order
    _cancelled_prefills(engine, prompt, full, args.cancels, rng)
    reply = engine.tokenize("Repeat this text exactly. " + "The quick brown fox jumps over the lazy dog. " * 8)
    _cancelled_replies(engine, reply, args.method, args.cancels, rng)
    _reply_speeds(engine, reply, args.method, args.reps)
    return 0


def _prefill_times(engine: Engine, prompt: list[int], reps: int) -> float:
    """The prompt's prefill with and without a cancel event (never set), interleaved; the plain median."""
    timings = {"plain": [], "cancellable": []}
    for _ in range(reps):
        for kind in timings:
            engine.reset()
            t0 = time.perf_counter()
            engine.prefill(prompt, cancel=threading.Event() if kind == "cancellable" else None)
            timings[kind].append(time.perf_counter() - t0)
    for kind, ts in timings.items():
        print(f"prefill {kind:<12} median {statistics.median(ts):.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})")
    return statistics.median(timings["plain"])


def _cancelled_prefills(engine: Engine, prompt: list[int], full: float, cancels: int, rng: random.Random) -> None:
    """Prefills cancelled at random moments (of a prefill `full` seconds long): the stop latency."""
    latencies = []
    for _ in range(cancels):
        engine.reset()
        cancel = TimedCancel()
        threading.Timer(rng.uniform(0.1, 0.9) * full, cancel.fire).start()
        try:
            engine.prefill(prompt, cancel=cancel.event)
        except Cancelled:
            latencies.append(cancel.latency())
    if latencies:
        print(f"stop latency over {len(latencies)} cancels: median {1000 * statistics.median(latencies):.0f} ms, "
              f"max {1000 * max(latencies):.0f} ms")


def _cancelled_replies(engine: Engine, reply: list[int], method: str, cancels: int, rng: random.Random) -> None:
    """Replies cancelled while they stream, a few tokens in: the stop latency."""
    latencies = []
    for _ in range(cancels):
        engine.reset()
        cancel = TimedCancel()
        stop_after = rng.randint(5, 40)
        decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=200))
        for n, _ in enumerate(decoder.generate(reply, 200, cancel=cancel.event)):
            if n + 1 == stop_after:
                threading.Timer(rng.uniform(0.0, 0.2), cancel.fire).start()
        if cancel.set_at is not None and decoder.stats.stop_reason == "cancelled":
            latencies.append(cancel.latency())
    if latencies:
        print(f"reply ({method}) stop latency over {len(latencies)} cancels: median "
              f"{1000 * statistics.median(latencies):.0f} ms, max {1000 * max(latencies):.0f} ms")


def _reply_speeds(engine: Engine, reply: list[int], method: str, reps: int) -> None:
    """The reply's speed with and without a cancel event: the hook's cost on every multi-token decode."""
    speeds = {"no cancel event": [], "cancel event": []}
    for _ in range(reps):
        for kind in speeds:
            engine.reset()
            decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=200))
            t0 = time.perf_counter()
            n = sum(1 for _ in decoder.generate(reply, 200, cancel=threading.Event() if kind == "cancel event" else None))
            speeds[kind].append(n / (time.perf_counter() - t0))
    for kind, v in speeds.items():
        print(f"reply ({method}) with {kind:<15} median {statistics.median(v):.1f} tok/s  "
              f"({', '.join(f'{x:.1f}' for x in v)})")


if __name__ == "__main__":
    sys.exit(main())
