"""A real `sense-local serve` process for the fault and fuzz tests: started on a chosen port with its
stderr in a file (a test reads the log after the fact; a pipe nobody reads would block the server
once full), killed or stopped, started again on the same port."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib.request

from conftest import ROOT, server_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class ServeProcess:
    def __init__(self, log: Path, *args: str, port: int | None = None, ctx: int = 2048):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.args = ("--port", str(self.port), "--ctx", str(ctx), *args)
        self.log = log
        self.env = server_env()  # kept across restarts on the same port
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self, timeout: float = 120) -> None:
        with self.log.open("a") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "serve", *self.args], cwd=ROOT,
                                         env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                self.health(timeout=1)
                return
            except OSError:  # not listening yet (URLError, a reset, a timeout)
                time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout:.0f} s")

    def health(self, timeout: float = 10) -> dict:
        with urllib.request.urlopen(self.base + "/health", timeout=timeout) as r:
            return json.loads(r.read())

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
