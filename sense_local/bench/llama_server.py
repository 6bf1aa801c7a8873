"""llama.cpp's own server as a peer: the same model, threads and context size, plain or with one of
its draft-model-free speculative types, one request at a time.

The binary comes from scripts/llama_server_build.py (built once per machine from the llama.cpp the
installed llama-cpp-python vendors, without the two patches our wheel carries, scripts/llama_patches.py:
llama.cpp as its users build it). Speeds come from the server's own `timings`: (tokens - 1) over
`predicted_ms` (first token to last), counted as our `tok_per_s` is (an end-of-generation token is
not a token shown, its decode's time is in); `prompt_per_second` is its prefill speed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import SenseError
from .peers import PeerResult

# llama-server's draft-model-free speculative types (`--spec-type`), each a peer of its own.
SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-mod", "ngram-cache")
# Types whose n-gram pool outlives a request: the server is restarted before each request, so a
# repetition of a task cannot draft from the answer it gave the first time (our methods keep no
# memory across requests either).
POOLED = ("ngram-mod", "ngram-cache")
PEER_PREFIX = "llama-server"
PEER_NAMES = (PEER_PREFIX, *(f"{PEER_PREFIX}-{t}" for t in SPEC_TYPES))
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_server_build.py"


def server_binary(build: bool = True) -> Path:
    """The cached llama-server, built first (about 7 minutes, said in one line) when `build`."""
    if not BUILD_SCRIPT.exists():
        raise SenseError(f"llama-server peers need the source checkout's {BUILD_SCRIPT.name} (scripts/)")
    proc = subprocess.run([sys.executable, str(BUILD_SCRIPT), "ensure" if build else "path"],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SenseError("llama-server is not built" if not build else "building llama-server failed (see above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServerPeer:
    """One llama-server process; `run` sends a prompt's tokens to /completion, greedy."""

    def __init__(self, binary: Path, model_path, *, spec_type: str | None, n_ctx: int, n_threads: int,
                 n_gpu_layers: int = 0):
        self.name = PEER_PREFIX if spec_type is None else f"{PEER_PREFIX}-{spec_type}"
        self.spec_type = spec_type
        self.fresh_per_request = spec_type in POOLED
        self.args = [str(binary), "-m", str(model_path), "-c", str(n_ctx), "-t", str(n_threads), "-tb", str(n_threads),
                     "-ngl", str(n_gpu_layers), "-np", "1", "--host", "127.0.0.1", "--no-webui"]
        if spec_type is not None:
            self.args += ["--spec-type", spec_type]
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.last_timings: dict = {}
        self.start()

    def start(self) -> None:
        self.port = free_port()
        log = open(os.devnull, "wb") if not os.environ.get("SENSE_DEBUG") else None
        self.proc = subprocess.Popen(self.args + ["--port", str(self.port)], stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SenseError(f"{self.name} exited at start with code {self.proc.returncode} "
                                 f"(run with SENSE_DEBUG=1 to see its log)")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.close()
        raise SenseError(f"{self.name} did not become ready in 120 s")

    def restart(self) -> None:
        self.close()
        self.start()

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3600) as r:
            return json.loads(r.read())

    def run(self, prompt: list[int], max_tokens: int, *, fresh: bool = False) -> PeerResult:
        """Greedy completion of the prompt's tokens; fresh=True evaluates the whole prompt again
        (no cached prefix), for prefill speed."""
        if self.fresh_per_request:
            self.restart()
        body = {"prompt": list(map(int, prompt)), "n_predict": max_tokens, "temperature": 0.0, "seed": 0,
                "cache_prompt": not fresh, "return_tokens": True, "stream": False}
        t0 = time.perf_counter()
        try:
            doc = self._post(body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return PeerResult([], "", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        wall = time.perf_counter() - t0
        timings = doc.get("timings", {})
        self.last_timings = timings
        tokens = [int(t) for t in doc.get("tokens", [])]
        if doc.get("stop_type") == "eos" and tokens:
            tokens = tokens[:-1]  # it counts the end-of-generation token; we count what is shown
        seconds = float(timings.get("predicted_ms", 0.0)) / 1000  # first token to last, the EOS step included, as ours
        accepted = int(timings.get("draft_n_accepted", 0))
        return PeerResult(tokens, doc.get("content", ""), seconds, wall=wall,
                          prompt_tok_per_s=float(timings.get("prompt_per_second", 0.0)),
                          prompt_n=int(timings.get("prompt_n", 0)),
                          drafted=int(timings.get("draft_n", 0)), accepted=accepted,
                          forwards=max(1, len(tokens) - accepted) if tokens else 0)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
