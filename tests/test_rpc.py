"""llama.cpp RPC (issue 33): real `sense-local rpc-worker` processes on loopback hold layers of the 135M.

- split over two workers and the local CPU, greedy output is the local run's (parting only at a
  near-tie, as batched arithmetic may), plainly and with drafts verified across the workers;
- a worker that is not there, or a bad --rpc, is one line naming it;
- a worker killed mid-reply: `generate` ends with one line naming it; `serve` stays up, fails the
  reply under way with an error naming it and answers later requests 503, and still stops cleanly.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import ROOT, chat, run_cli
from served import free_port, rss_bytes
from sense_local.bench.runner import NEAR_TIE, first_divergence
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions, make_decoder

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # a raw prompt the 135M continues for as long as it may
PROMPTS = ["Explain what a hash table is and when to use one.",
           "Write a Python function that returns the n-th Fibonacci number."]


class Worker:
    """A `sense-local rpc-worker` subprocess on a free loopback port."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "rpc-worker", "--port",
                                          str(self.port), "--threads", "1"], cwd=ROOT, stdout=out, stderr=out)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"worker on {self.endpoint} did not listen")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def workers(tmp_path):
    pair = [Worker(tmp_path / f"worker{i}.log") for i in range(2)]
    yield pair
    for w in pair:
        w.stop()


def greedy(engine, prompt, method: str, n: int = 64):
    decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=n), record_gaps=method == "ar")
    tokens = [e.token for e in decoder.generate(prompt, n) if e.token >= 0]
    return tokens, decoder.stats


def assert_same_until_a_near_tie(ours, local, gaps, what):
    at = first_divergence(ours, local)
    if at is not None:
        assert gaps[at] < NEAR_TIE, f"{what}: parted from the local run at token {at}, top-2 gap {gaps[at]:.3f}"


def test_split_over_two_workers_and_the_cpu_decodes_as_the_local_run(engine, model_path, workers):
    before = [rss_bytes(w.proc.pid) for w in workers]
    remote = Engine(model_path, n_ctx=2048, rpc=",".join(w.endpoint for w in workers))
    try:
        placed = remote.placement
        assert placed.local > 0 and all(n > 0 for n in placed.layers), placed.describe()
        assert placed.local + sum(placed.layers) == remote.n_layer + 1
        assert remote.rpc_workers == tuple(w.endpoint for w in workers)
        grown = [rss_bytes(w.proc.pid) - b for w, b in zip(workers, before)]
        weights = model_path.stat().st_size
        for w, g, n in zip(workers, grown, placed.layers):  # each worker holds its layers' weights
            assert g > 0.5 * weights * n / (remote.n_layer + 1), (w.endpoint, g, placed.describe())
        for text in PROMPTS:
            prompt = chat(engine, text)
            local, local_stats = greedy(engine, prompt, "ar")
            for method in ("ar", "sense"):  # plain steps; drafts verified in batches, key states read off the workers
                ours, _ = greedy(remote, prompt, method)
                assert_same_until_a_near_tie(ours, local, local_stats.top2_gaps, f"{method} over RPC")
            remote.reset(), engine.reset()  # both prompts evaluated whole: no state saved by an earlier test is reused
            split_logits = remote.prefill(prompt).logits[-1].copy()
            local_logits = engine.prefill(prompt).logits[-1]
            assert abs(split_logits - local_logits).max() < 0.05
        # SENSE's key states read from a block a worker computes (the tap reads the remote tensor)
        block = remote.n_layer - 2
        assert block >= placed.local
        tokens = chat(engine, PROMPTS[0])
        remote.use_key_layer(block)
        engine.use_key_layer(block)
        try:
            theirs, ours = remote.side_keys(tokens), engine.side_keys(tokens)
        finally:
            engine.use_key_layer("default")
        assert theirs.shape == ours.shape and abs(theirs - ours).max() < 1e-2 * abs(ours).max()
    finally:
        remote.close()


def test_a_worker_that_is_not_there_or_a_bad_rpc_is_one_line_naming_it():
    port = free_port()
    r = run_cli("generate", "hi", "--max-tokens", "4", "--rpc", f"127.0.0.1:{port}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in r.stderr and "refused" in r.stderr, r.stderr
    for bad in ("localhost", "127.0.0.1:0", "127.0.0.1:x", "[::1]:50052", f"127.0.0.1:{port},127.0.0.1:{port}"):
        r = run_cli("generate", "hi", "--max-tokens", "4", "--rpc", bad)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--rpc" in r.stderr, (bad, r.stderr)


def test_rpc_worker_refuses_a_bad_address_or_a_busy_port_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli("rpc-worker", "--port", str(port))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in r.stderr, r.stderr
    r = run_cli("rpc-worker", "--host", "localhost")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "IPv4" in r.stderr, r.stderr


def _start_generate(workers, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sense_local.cli", "generate", COUNTING, "--raw", "--method", "ar", "--max-tokens",
         "3000", "--ctx", "4096", "--rpc", ",".join(w.endpoint for w in workers)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), env=os.environ.copy())


def test_a_worker_killed_mid_reply_ends_generate_with_one_line_naming_it(workers, tmp_path):
    log = tmp_path / "generate.err"
    proc = _start_generate(workers, log)
    try:
        assert proc.stdout.read(40), log.read_text()  # the reply is under way
        workers[1].kill()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and workers[1].endpoint in err and "stopped answering" in err, err
    assert workers[0].endpoint not in err


def test_a_worker_killed_mid_reply_fails_that_reply_and_serve_stays_up(workers, tmp_path):
    port = free_port()
    log = tmp_path / "serve.err"
    server = subprocess.Popen(
        [sys.executable, "-m", "sense_local.cli", "serve", "--port", str(port), "--ctx", "4096", "--method", "ar",
         "--rpc", ",".join(w.endpoint for w in workers)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert server.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert "layers:" in log.read_text() and workers[1].endpoint in log.read_text()
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=60)
        stream = client.completions.create(model="test", prompt=COUNTING, max_tokens=3000, stream=True)
        received = ""
        with pytest.raises(openai.APIError) as failed:
            for chunk in stream:
                received += chunk.choices[0].text
                if len(received) > 40 and workers[1].proc.poll() is None:
                    workers[1].kill()
        assert workers[1].endpoint in str(failed.value) and received, (str(failed.value), received)

        with pytest.raises(openai.APIStatusError) as later:
            client.completions.create(model="test", prompt="Hello", max_tokens=4)
        assert later.value.status_code == 503 and workers[1].endpoint in str(later.value)
        health = httpx.get(base + "/health", timeout=10).json()
        assert health["status"] == "error" and workers[1].endpoint in health["error"]
        assert server.poll() is None
        assert log.read_text().count("stopped answering") == 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(20)  # stops, never hangs on the lost worker's connection
        except subprocess.TimeoutExpired:
            server.kill()
            raise
