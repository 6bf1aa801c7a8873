"""Evaluated conversations kept on disk, so that one reopened in a later run (a TUI session, a chat
a client sends again after a restart) resumes where it ended instead of evaluating its whole prompt.

After each reply the engine's live conversation (its committed tokens, its KV state as
`llama_state_seq_get_data` writes it, and the key states SENSE keeps of it) is written here, one
file per conversation, replacing the file of the conversation it continues. A later prompt that
starts with more of a kept conversation's tokens than the engine holds in its context or in RAM
(kv_slots.py) gets that state back (prefill_reuse.py) and evaluates only what follows.

Why it pays: a state is read back in tens of milliseconds (~28 KB per token on Qwen2.5-1.5B: a
1,200-token conversation is ~33 MiB, ~40 MiB with SENSE's key states), where evaluating the same
tokens takes 13-36 s on two cores. One folder per model file, context shape and key layer (a state is only valid
for the model and the KV layout that wrote it: llama.cpp refuses another, and so does the file
check here); files are written whole to a temporary name and renamed (a crash leaves the previous
file or none, never half of one); past `cap_bytes` the least recently used go first. A file that
cannot be read is removed and the prompt is evaluated as if it were not there.
"""
from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .kv_slots import SavedState, common_prefix
from .paths import data_home

DEFAULT_MIB = 1024  # disk for kept conversations, at most
SUFFIX = ".kv.npz"
_writing: dict[Path, threading.Thread] = {}  # folder -> its latest write (a later reader waits for it)


@dataclass(eq=False)
class _Kept:
    path: Path
    tokens: np.ndarray  # [n] int32 the conversation's committed tokens
    n_keys: int  # positions whose key states the file holds
    nbytes: int


def states_root() -> Path:
    """Where kept conversations go: $SENSE_KV_STATES, else kv-states/ in the data dir."""
    return Path(os.environ["SENSE_KV_STATES"]) if os.environ.get("SENSE_KV_STATES") else data_home() / "kv-states"


def states_dir(engine) -> Path:
    """The folder of the states `engine` can restore: its model file, context size and key layer."""
    layer = "final" if engine.key_layer is None else f"l{engine.key_layer}"
    return states_root() / f"{engine.fingerprint[:16]}-c{engine.n_ctx}-{layer}"


def disk_states(engine) -> "DiskStates | None":
    """The kept conversations `engine`'s context can restore (its key layer's folder), or None when
    it keeps none (engine.disk_bytes 0); held on the engine."""
    if engine.disk_bytes <= 0:
        return None
    directory = states_dir(engine)
    if engine.disk is None or engine.disk.directory != directory:
        if engine.disk is not None:
            engine.disk.flush()
        engine.disk = DiskStates(directory, engine.disk_bytes)
    return engine.disk


def memory_file() -> Path:
    """Where grounded turns are remembered as the model saw them (grounding/memory.py), for every model."""
    return states_root() / "grounded-turns.jsonl"


class DiskStates:
    """The conversations kept under `directory` (made on first write). Reads happen on the engine's
    thread; a write is handed to one writer thread, so a reply's end never waits for the disk (the
    process's end does, and so does the first read of the folder by another engine)."""

    def __init__(self, directory: Path, cap_bytes: int = DEFAULT_MIB << 20):
        self.directory = Path(directory)
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()  # the index below, shared with the writer thread
        self._kept: list[_Kept] | None = None  # least recently used first; read on first use
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------------ reading
    def prefetch(self) -> None:
        """Read what is kept on a thread of its own, now: a first prompt finds it read (or waits for
        the rest) instead of reading it all before its prefill (190 kept files: 120 ms)."""
        if self._kept is None:
            threading.Thread(target=self._read_index, name="kv-disk-index", daemon=True).start()

    def _read_index(self) -> None:
        with self._lock:
            self._index()

    def _index(self) -> list[_Kept]:
        if self._kept is None:
            pending = _writing.get(self.directory)
            if pending is not None and pending is not threading.current_thread():
                pending.join()  # an earlier engine's write to this folder (the previous run, in a test)
            kept = []
            for path in sorted(self.directory.glob("*" + SUFFIX), key=_mtime):
                try:
                    with np.load(path) as z:
                        kept.append(_Kept(path, z["tokens"].astype(np.int32), int(z["n_keys"][0]), _size(path)))
                except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
                    _remove(path)  # unreadable (cut short, foreign): as if it were not there
            self._kept = kept
        return self._kept

    def best(self, prompt: Sequence[int], *, keys: bool) -> tuple[Path | None, int]:
        """The kept conversation holding the longest start of `prompt` (only positions with key
        states count when `keys`), and that length."""
        prompt = np.asarray(prompt, np.int32)
        best, best_n = None, 0
        with self._lock:
            for kept in self._index():
                n = common_prefix(kept.tokens, prompt)
                if keys:
                    n = min(n, kept.n_keys)
                if n > best_n:
                    best, best_n = kept.path, n
        return best, best_n

    def load(self, path: Path) -> SavedState | None:
        """The state kept in `path` (it becomes the most recently used), or None where it cannot be read."""
        try:
            with np.load(path) as z:
                tokens = z["tokens"].astype(np.int32).tolist()
                keys = np.ascontiguousarray(z["keys"], np.float32)
                data = np.ascontiguousarray(z["state"], np.uint8)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            self._forget(path)
            return None
        try:
            os.utime(path)  # least recently used goes first, in this run and the next
        except OSError:
            pass
        with self._lock:
            kept = self._index()
            for i, k in enumerate(kept):
                if k.path == path:
                    kept.append(kept.pop(i))
                    break
        return SavedState(tokens, data, keys)

    def forget(self, path: Path) -> None:
        """Drop a kept state llama.cpp refused (another build's layout)."""
        self._forget(path)

    def _forget(self, path: Path) -> None:
        _remove(path)
        with self._lock:
            if self._kept is not None:
                self._kept = [k for k in self._kept if k.path != path]

    # ------------------------------------------------------------------ writing
    def keep(self, state: SavedState) -> None:
        """Write `state` (on the writer thread; a write still running is waited for first, so
        files land in order). Kept files it holds whole (a start of its tokens) are removed."""
        if self.cap_bytes <= 0 or state.nbytes > self.cap_bytes:
            return
        self.flush()
        # not a daemon: a write under way when the process ends still lands
        self._writer = _writing[self.directory] = threading.Thread(target=self._write, args=(state,), name="kv-disk")
        self._writer.start()

    def flush(self) -> None:
        """Wait for the write under way, if any."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _write(self, state: SavedState) -> None:
        tokens = np.asarray(state.tokens, np.int32)
        name = hashlib.sha256(tokens.tobytes()).hexdigest()[:24] + SUFFIX
        path = self.directory / name
        tmp = path.with_name(name + ".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, tokens=tokens, n_keys=np.array([len(state.keys)]), keys=np.asarray(state.keys, np.float32),
                         state=state.data)  # n_keys: read without the keys themselves
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, ValueError):  # a full or read-only disk: nothing kept, the conversation goes on
            _remove(tmp)
            return
        with self._lock:
            kept = []
            for k in self._index():
                if k.path != path and _holds(tokens, len(state.keys), k):
                    _remove(k.path)  # the conversation this one continues
                elif k.path != path:
                    kept.append(k)
            kept.append(_Kept(path, tokens, len(state.keys), _size(path)))
            while sum(k.nbytes for k in kept) > self.cap_bytes and len(kept) > 1:
                _remove(kept.pop(0).path)
            self._kept = kept


def _holds(tokens: np.ndarray, n_keys: int, old: _Kept) -> bool:
    """Does a state of `tokens` (key states for the first n_keys) hold all that `old` does?"""
    n = len(old.tokens)
    return n <= len(tokens) and old.n_keys <= n_keys and bool(np.array_equal(tokens[:n], old.tokens))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # gone meanwhile (another process's cap): read as the oldest, then skipped
        return 0.0


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # gone already, or a read-only folder: nothing more to do
        pass
