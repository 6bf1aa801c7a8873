"""One writer per store, enforced by the operating system.

Every code path that writes store files opens the store writable, and that takes an exclusive
`flock` on `<store>/writer.lock`. A second writer (another `sense-local index`, the TUI's
background indexer, a server) either fails at once with a one-line message naming the holder's
process, or waits for it (`wait=True`). The kernel drops the lock when its holder exits, so a
killed indexer never leaves a stale lock. Readers take no lock: they read the last committed
generation, which writers never modify in place.
"""
from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from .manifest import StoreError

LOCK = "writer.lock"


class StoreBusyError(StoreError):
    """Another process holds the store's writer lock."""


class WriterLock:
    def __init__(self, directory: Path, *, wait: bool = False, on_wait=None):
        self.path = directory / LOCK
        self._fd = -1
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            who = f"process {holder}" if holder else "another process"
            if not wait:
                os.close(fd)
                raise StoreBusyError(f"{directory}: store is being written by {who} (indexing); "
                                     "try again when it finishes, or pass --wait") from None
            (on_wait or _say)(f"{directory}: store is being written by {who}; waiting for it to finish")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()} {time.time():.0f}\n".encode(), 0)

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __del__(self):
        self.release()


def _say(text: str) -> None:
    print(f"sense-local: {text}", file=sys.stderr)
