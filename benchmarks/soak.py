"""Soak: N clients against one `sense-local serve` for M minutes (`scripts/bench_soak`).

Each client loops over a mix of requests through the `openai` client: streamed and plain chat,
completions (plain and streamed), streams it cancels after a few chunks, sampled chat, and bad
requests (raw HTTP, each must be a 400 in OpenAI's shape). The server runs with a short queue
(--queue), so some requests meet a full queue: each such 503 must carry Retry-After, which the client
then honours (capped at --retry-cap seconds) before its next request.

Before the clients start, every temperature-0 request of the mix is answered once, alone, as its
sequential reference; during the soak each temperature-0 reply must equal its reference (a reply
that differs is "mixed": another client's text, or one cut short, would show here). Reported:
requests answered, 503s (with and without Retry-After), errors, mixed replies, first-token and total
latency (p50, p99), and the server's RSS after the references and at the end.

    python -m benchmarks.soak --model test --clients 8 --minutes 10
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import openai

from sense_local.bench.llama_server import free_port

CHATS = [
    "Name three rivers in Europe.", "What is a hash table?", "Give me a haiku about rain.",
    "How do I reverse a list in Python?", "What is the capital of Japan?", "Explain recursion in one sentence.",
    "List four prime numbers.", "What does HTTP stand for?", "Suggest a name for a cat.",
    "Why is the sky blue?", "Write a SQL query that counts rows.", "What is 12 times 12?",
]
COMPLETIONS = [
    "The quick brown fox", "def fibonacci(n):\n", "Once upon a time, in a small village,",
    "The three primary colours are", "import os\nimport sys\n\n", "Dear team,\n\nI am writing to",
]
BAD = [  # (body, content type): each must be answered 400
    (b"{not json", "application/json"),
    (json.dumps({"messages": []}).encode(), "application/json"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": 9}).encode(), "application/json"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}).encode(), "application/json"),
    (b"[" * 50_000 + b"]" * 50_000, "application/json"),
    (json.dumps({"messages": "hello"}).encode(), "application/json"),
]
MIX = [("chat", 30), ("chat-stream", 25), ("completion", 8), ("completion-stream", 7), ("cancel", 10),
       ("sampled", 8), ("bad", 12)]


@dataclass
class Tally:
    answered: int = 0  # 2xx with a checked reply (or a 400 where one was due)
    rejected: int = 0  # 503 with Retry-After
    cancelled: int = 0  # streams the client closed on purpose
    errors: list[str] = field(default_factory=list)  # anything else (503 without Retry-After included)
    mixed: list[str] = field(default_factory=list)  # temperature-0 replies that differ from their reference
    first_token: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Soak:
    def __init__(self, port: int, max_tokens: int, retry_cap: float):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.max_tokens = max_tokens
        self.retry_cap = retry_cap
        self.reference: dict[tuple[str, str], str] = {}
        self.tally = Tally()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key="none", max_retries=0, timeout=600)

    # ------------------------------------------------------------------ one request of each kind
    def chat(self, client, prompt: str, *, stream: bool, temperature: float = 0.0, cancel_after: int = 0):
        """(text, first-token seconds or None, total seconds, closed early)."""
        t0 = time.perf_counter()
        kw = dict(model="default", messages=[{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
                  temperature=temperature)
        if not stream:
            reply = client.chat.completions.create(**kw)
            return reply.choices[0].message.content, None, time.perf_counter() - t0, False
        return self._read_stream(client.chat.completions.create(stream=True, **kw), t0, cancel_after,
                                 lambda c: c.choices[0].delta.content if c.choices else None)

    def completion(self, client, prompt: str, *, stream: bool):
        t0 = time.perf_counter()
        kw = dict(model="default", prompt=prompt, max_tokens=self.max_tokens, temperature=0)
        if not stream:
            reply = client.completions.create(**kw)
            return reply.choices[0].text, None, time.perf_counter() - t0, False
        return self._read_stream(client.completions.create(stream=True, **kw), t0, 0,
                                 lambda c: c.choices[0].text if c.choices else None)

    @staticmethod
    def _read_stream(stream, t0: float, cancel_after: int, piece_of):
        parts, first = [], None
        for i, chunk in enumerate(stream):
            piece = piece_of(chunk)
            if piece:
                first = first or time.perf_counter() - t0
                parts.append(piece)
            if cancel_after and i + 1 >= cancel_after:
                stream.close()
                return "".join(parts), first, time.perf_counter() - t0, True
        return "".join(parts), first, time.perf_counter() - t0, False

    def bad(self, rng: random.Random) -> None:
        body, kind = rng.choice(BAD)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": kind})
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        if r.status == 503:
            raise Rejected(r.headers.get("retry-after"))
        err = json.loads(raw).get("error") if (r.headers.get("content-type") or "").startswith("application/json") else None
        if r.status != 400 or not isinstance(err, dict) or not err.get("message"):
            raise AssertionError(f"bad request answered {r.status}: {raw[:200]!r}")

    # ------------------------------------------------------------------ the references and the loop
    def references(self) -> None:
        client = self.client()
        for prompt in CHATS:
            self.reference[("chat", prompt)] = self.chat(client, prompt, stream=False)[0]
        for prompt in COMPLETIONS:
            self.reference[("completion", prompt)] = self.completion(client, prompt, stream=False)[0]

    def run_client(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        client = self.client()
        kinds, weights = zip(*MIX)
        while time.time() < deadline:
            kind = rng.choices(kinds, weights)[0]
            try:
                self.one(kind, client, rng)
            except Rejected as r:
                with self.tally.lock:
                    if r.retry_after and r.retry_after.isdigit() and int(r.retry_after) > 0:
                        self.tally.rejected += 1
                    else:
                        self.tally.errors.append(f"{kind}: 503 without Retry-After")
                time.sleep(min(float(r.retry_after or 1), self.retry_cap))
            except openai.APIStatusError as exc:
                if exc.status_code == 503:
                    retry = exc.response.headers.get("retry-after")
                    with self.tally.lock:
                        if retry and retry.isdigit() and int(retry) > 0:
                            self.tally.rejected += 1
                        else:
                            self.tally.errors.append(f"{kind}: 503 without Retry-After")
                    time.sleep(min(float(retry or 1), self.retry_cap))
                else:
                    with self.tally.lock:
                        self.tally.errors.append(f"{kind}: {exc.status_code} {str(exc)[:200]}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown, never hidden
                with self.tally.lock:
                    self.tally.errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:200]}")

    def one(self, kind: str, client, rng: random.Random) -> None:
        t = self.tally
        if kind == "bad":
            self.bad(rng)
            with t.lock:
                t.answered += 1
                t.kinds[kind] += 1
            return
        if kind.startswith("completion"):
            prompt = rng.choice(COMPLETIONS)
            text, first, total, closed = self.completion(client, prompt, stream=kind.endswith("stream"))
            ref = self.reference[("completion", prompt)]
        else:
            prompt = rng.choice(CHATS)
            text, first, total, closed = self.chat(
                client, prompt, stream=kind != "chat", temperature=0.8 if kind == "sampled" else 0.0,
                cancel_after=rng.randint(1, 4) if kind == "cancel" else 0)
            ref = self.reference[("chat", prompt)]
        with t.lock:
            t.kinds[kind] += 1
            if first is not None:
                t.first_token.append(first)
            if closed:
                t.cancelled += 1
                if not ref.startswith(text):
                    t.mixed.append(f"{kind} {prompt!r}: {text!r} is not a start of {ref!r}")
                return
            t.total.append(total)
            t.answered += 1
            if kind != "sampled" and text != ref:
                t.mixed.append(f"{kind} {prompt!r}: {text!r} != {ref!r}")


class Rejected(Exception):
    def __init__(self, retry_after: str | None):
        self.retry_after = retry_after


def health(port: int, timeout: float = 30) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
        return json.loads(r.read())


def start_server(model: str, port: int, queue: int, log: Path) -> subprocess.Popen:
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "serve", "--model", model, "--port", str(port),
                                 "--queue", str(queue), "--no-history"], stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy())
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"soak: the server exited: {log.read_text()[-2000:]}")
        try:
            health(port, timeout=1)
            return proc
        except OSError:  # not listening yet
            time.sleep(0.25)
    raise SystemExit("soak: the server did not start in 5 minutes")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="test")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--max-tokens", type=int, default=48, help="per request (default 48)")
    ap.add_argument("--queue", type=int, default=4, help="the server's --queue: short, so 503s happen (default 4)")
    ap.add_argument("--retry-cap", type=float, default=1.0, help="most seconds a client waits after a 503")
    ap.add_argument("--seed", type=int, default=35)
    ap.add_argument("--json", dest="json_file", help="also write the figures here")
    args = ap.parse_args(argv)
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "serve.log"
    proc = start_server(args.model, port, args.queue, log)
    soak = Soak(port, args.max_tokens, args.retry_cap)
    try:
        soak.references()
        rss_start = rss_mib(proc.pid)
        t0 = time.time()
        deadline = t0 + args.minutes * 60
        threads = [threading.Thread(target=soak.run_client, args=(args.seed + i, deadline)) for i in range(args.clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.time() - t0
        rss_end = rss_mib(proc.pid)
        counters = health(port)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    t = soak.tally
    server_log = log.read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    result = {
        "model": args.model, "clients": args.clients, "minutes": round(elapsed / 60, 2), "queue": args.queue,
        "max_tokens": args.max_tokens, "answered": t.answered, "rejected_503_with_retry_after": t.rejected,
        "cancelled_by_client": t.cancelled, "errors": len(t.errors), "mixed": len(t.mixed),
        "kinds": dict(t.kinds),
        "first_token_s": {"p50": round(percentile(t.first_token, 0.5), 3), "p99": round(percentile(t.first_token, 0.99), 3)},
        "total_s": {"p50": round(percentile(t.total, 0.5), 3), "p99": round(percentile(t.total, 0.99), 3)},
        "rss_mib": {"start": round(rss_start, 1), "end": round(rss_end, 1), "growth": round(rss_end - rss_start, 1)},
        "server": {k: counters.get(k) for k in ("completed", "cancelled", "failed", "rejected", "stalled")},
        "server_log_tracebacks": tracebacks,
        "error_samples": t.errors[:10], "mixed_samples": t.mixed[:10],
    }
    print(json.dumps(result, indent=1))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1))
    ok = not t.errors and not t.mixed and rss_end - rss_start < 50 and tracebacks == 0
    print(f"soak: {'PASS' if ok else 'FAIL'}: {t.answered} answered, {t.rejected} 503 (with Retry-After), "
          f"{len(t.errors)} errors, {len(t.mixed)} mixed, RSS {rss_start:.0f} -> {rss_end:.0f} MiB", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
