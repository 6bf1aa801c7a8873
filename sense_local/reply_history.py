"""The model's own earlier replies, kept as a draft source (issue 31): what this user's conversations
with this model said before, searched by SENSE with the target's key states.

One history per model (and key layer, since queries and keys must come from one layer) and per owner
(on a server, per API key: one user's text must not shape another's timing), in a document store
under the data dir: `history/<model>-<layer>/<owner>/`. Each finished reply is one "document" of the
store (its tokens, and the key states of its positions when the reply was decoded with them: SENSE
computes them, `ar` and `pld` do not, so their replies are kept as tokens only), appended and
committed by the store's own rules (a crash loses at most the reply being written, never the store).

Bounded: past `cap_tokens` live tokens the oldest replies are dropped (down to three quarters of
the cap), and the vector index is rebuilt from the live vectors when removed ones make up half of
it. Dropped replies' tokens stay in the append-only token file (4 bytes a token) until `clear()`.
Measured on the 1.5B's real key states (benchmarks/history_search_cost.py, AMD EPYC, 2 cores): a
k-NN search takes 0.13 ms at 4k vectors and 0.23 ms at 33k, 0.4-0.6% of a 37 ms one-token decode,
far under 2%; what binds is the write: keeping a 128-token reply (adding its vectors to the HNSW
graph, saving the index) takes 62 ms at 4k vectors and 234-279 ms at 33k on the one thread it uses
(40 and 187 ms on both cores), growing with the index, and 33k vectors are 54 MiB on disk and in
memory. Hence the default cap of 32,768 tokens.

The write runs on a writer thread after the reply, adding the vectors on one thread (1.2-1.6x the
time on both cores for the 1.5B's key states), so the next reply's decode keeps a core while it
lasts, and the graph, built in one order by one thread, is the same every time; a search that finds
the writer busy returns nothing at once rather than wait (the decode never stalls on the history).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datastore.manifest import DocEntry
from .datastore.ngram_index import NGRAM_SIZES as DOC_NGRAM_SIZES, NgramIndex
from .datastore.store_reader import folder_bytes
from .paths import data_home

DEFAULT_CAP_TOKENS = 32_768  # live tokens kept (see the module docstring for the measurement)
# The recycle table (speculative/drafters/recycle.py) kept beside the replies: the target's own
# likeliest next tokens, learnt over this owner's earlier conversations, so a new process drafts
# from where the last one left off (what one conversation teaches it is small: the quick suite's
# everyday turns are 11-128 tokens each). Written after a reply that taught it something, by the
# writer thread, to a new file renamed over the old: a crash keeps the last whole table.
TABLE = "recycle.npz"
# The replies' n-gram lookup goes down to single tokens (the documents' stops at 2): a token the model
# wrote before, followed as the vote of its occurrences says (drafters/rest.py: the returning user
# 1.312x -> 1.324x modeled); where they disagree the vote share keeps the draft short.
NGRAM_SIZES = DOC_NGRAM_SIZES + (1,)
LOCAL_OWNER = "local"  # the owner of every front end's history but a server's with an API key


def owner_for_key(api_key: str | None) -> str:
    """The history owner of a server's API key (its hash: the key itself is never written)."""
    if not api_key:
        return LOCAL_OWNER
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:16]


def history_dir(engine, owner: str = LOCAL_OWNER) -> Path:
    layer = "final" if engine.key_layer is None else f"l{engine.key_layer}"
    return histories_root() / f"{engine.fingerprint[:16]}-{layer}" / owner


def histories_root() -> Path:
    """The folder holding every model's and owner's history."""
    return data_home() / "history"


@dataclass
class HistorySize:
    replies: int
    tokens: int  # live tokens
    vectors: int  # key states searchable
    disk_bytes: int


class ReplyHistory:
    """A writable history (the process holds the store's writer lock); SENSE reads it through
    `search`, `token_array` and `n_vectors`, as it reads a document store."""

    def __init__(self, store, cap_tokens: int = DEFAULT_CAP_TOKENS):
        self.store = store  # a StoreWriter
        # one thread adds a reply's vectors: the write runs beside decoding (the next reply may have
        # started), and a graph built by one thread is the same every time (replays are repeatable)
        store.add_threads = 1
        self.cap_tokens = cap_tokens
        self._lock = threading.Lock()  # held by the writer while the store changes
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._pending: Future | None = None
        self._closed = False
        self._count = len(store.manifest.documents)
        self.key_layer = store.manifest.key_layer
        self._ngrams = NgramIndex.of_store(store, NGRAM_SIZES)  # exact n-gram lookup in the replies' tokens, kept current
        self.table_state, self.table_note = _read_table(store.dir / TABLE)  # the recycle table kept, or None

    @classmethod
    def open(cls, engine, owner: str = LOCAL_OWNER, *, directory: Path | None = None,
             cap_tokens: int = DEFAULT_CAP_TOKENS) -> "ReplyHistory":
        """The engine's history for `owner` (made on first use). Another process writing it already:
        StoreBusyError (the caller goes on without a history)."""
        from .datastore import DocumentStore

        directory = directory or history_dir(engine, owner)
        store = DocumentStore.open(directory, fingerprint=engine.fingerprint, writable=True, create={
            "model_fingerprint": engine.fingerprint, "model_name": Path(engine.path).name,
            "n_embd": engine.n_embd, "key_layer": engine.key_layer})
        return cls(store, cap_tokens)

    # ------------------------------------------------------------------ what SENSE reads
    def require_key_layer(self, layer) -> None:
        self.store.require_key_layer(layer)

    @property
    def n_vectors(self) -> int:
        return self.store.n_vectors

    @property
    def token_array(self) -> np.ndarray:
        return self.store.token_array

    def search(self, key_states: np.ndarray, k: int = 8, continuation: int = 8):
        """The store's search (datastore Neighbours), or None while the writer is changing it."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self.store.search(key_states, k, continuation)
        finally:
            self._lock.release()

    def lookup(self, context: np.ndarray, max_matches: int = 32, length: int = 10):
        """NgramIndex.lookup over the replies' tokens (a suffix of `context` matched exactly); no
        match while the writer is changing the history."""
        if not self._lock.acquire(blocking=False):
            return np.zeros((0, length), np.int32), 0
        try:
            return self._ngrams.lookup(context, max_matches, length)
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ writing
    def append(self, tokens: list[int], key_states: np.ndarray | None) -> Future:
        """Keep a finished reply: tokens [T] and, when known, key_states [T-1, n_embd] (row i chose
        token i+1). Written on the writer thread; the Future says when it is committed."""
        tokens = np.asarray(tokens, np.int32)
        if key_states is not None:
            key_states = np.array(key_states, np.float32)  # a copy: the caller's buffer moves on
        self._pending = self._writer.submit(self._write, tokens, key_states)
        return self._pending

    def keep_table(self, state: dict[str, np.ndarray]) -> Future:
        """Keep the recycle table's arrays (RecycleTable.state), written as they are on the writer
        thread: the reply is not held up by a copy (16 MB for a 152k vocabulary, ~10 ms), and what a
        next reply writes meanwhile may be partly in the file, entries that are only guesses of what
        comes next either way (the target verifies every draft)."""
        self._pending = self._writer.submit(_write_table, self.store.dir / TABLE, dict(state))
        return self._pending

    def flush(self) -> None:
        """Wait for the replies given so far to be committed (their errors raised here)."""
        if self._pending is not None:
            self._pending.result()

    def _write(self, tokens: np.ndarray, key_states: np.ndarray | None) -> None:
        if len(tokens) < 2:
            return
        with self._lock:
            self._count += 1
            entry = DocEntry(path=f"reply-{time.time_ns()}-{self._count}", sha256="", mtime=time.time(),
                             size=len(tokens), start=0, end=0, note="reply")
            self.store.add_document(entry, tokens, key_states)
            self._drop_oldest()
            self.store.commit()
            self._ngrams = NgramIndex.of_store(self.store, NGRAM_SIZES)

    def _drop_oldest(self) -> None:
        docs = sorted(self.store.manifest.documents.values(), key=lambda d: d.start)
        live = sum(d.n_tokens for d in docs)
        if live <= self.cap_tokens:
            return
        for d in docs:
            if live <= self.cap_tokens * 3 // 4:
                break
            self.store.remove_document(d.path)
            live -= d.n_tokens
        if self.store.index.stats.nodes > 2 * len(self.store.index):  # mostly tombstones: rebuild
            self._rebuild_index()

    def _rebuild_index(self) -> None:
        old = self.store.index
        keys = np.array([k for d in self.store.manifest.documents.values() if d.keyed
                         for k in range(d.start, d.end - 1)], np.uint64)
        fresh = type(old)(ndim=old.ndim, metric=self.store.manifest.metric, dtype=self.store.manifest.dtype)
        if len(keys):
            vectors = old.get(keys, dtype=np.float32)
            fresh.add(keys, np.stack(vectors) if isinstance(vectors, tuple) else vectors.reshape(len(keys), -1),
                      threads=self.store.add_threads)
        self.store.index = fresh

    # ------------------------------------------------------------------ size and clearing
    def size(self) -> HistorySize:
        self.flush()
        docs = self.store.manifest.documents.values()
        return HistorySize(len(docs), sum(d.n_tokens for d in docs), self.n_vectors, self.store.disk_bytes())

    def close(self) -> None:
        """Finish the pending writes and give up the writer lock (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)
            self.store.release()


def _read_table(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """(the kept table's arrays, or None; why a kept one could not be read, or None)."""
    if not path.exists():
        return None, None
    try:
        with np.load(path, allow_pickle=False) as kept:
            return {name: kept[name] for name in kept.files}, None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return None, f"the kept recycle table {path} could not be read ({type(exc).__name__}): a new one is kept from now on"


def _write_table(path: Path, arrays: dict[str, np.ndarray]) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


def clear_histories(root: Path) -> int:
    """Remove every history under `root` (histories_root); how many bytes were freed. A history in use
    by a running process is refused (its writer lock), in one line."""
    from .datastore.writer_lock import LOCK, WriterLock

    if not root.exists():
        return 0
    freed = 0
    for lock_file in sorted(root.rglob(LOCK)):
        directory = lock_file.parent
        lock = WriterLock(directory, wait=False)  # StoreBusyError while another process writes it
        try:
            freed += folder_bytes(directory)
            shutil.rmtree(directory)
        finally:
            lock.release()
    return freed
