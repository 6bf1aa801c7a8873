"""Writing a store: documents appended (tokens, passages, key states), removed, and committed as a
new generation; a crash at any point leaves the last commit loadable (store.py has the layout). A
StoreWriter holds the store's writer lock (writer_lock.py) from its open until `release()`."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from .disk_full import room_error
from .indexing_marker import mark_indexing
from .integrity import record_index, record_tokens
from .manifest import MANIFEST, DocEntry, Manifest, StoreError
from .passages import PassageSpan, passages_digest, split_passages
from .store_reader import TOKENS, StoreReader
from .writer_lock import LOCK, WriterLock

DTYPES = ("f32", "f16", "i8")  # vector types an index may hold
DEFAULT_DTYPE = "i8"  # measured: next-token recall@8 0.98-1.00 of f32 at 10k-56k vectors, half of f16's memory


def check_new_store(directory: Path, create: dict | None) -> None:
    """Where no manifest exists, a store is made only when asked (`create`), in a missing or empty
    folder (its writer lock aside); anything else is refused in one line."""
    if create is None:
        raise StoreError(f"{directory}: not a sense-local store (no {MANIFEST}); index documents first")
    if directory.exists() and (not directory.is_dir() or any(p.name != LOCK for p in directory.iterdir())):
        raise StoreError(f"{directory}: exists and is not a sense-local store; refusing to write there")


class StoreWriter(StoreReader):
    writable = True

    add_threads = 0  # threads adding vectors to the HNSW graph (usearch: 0 = every core)

    def __init__(self, directory: Path, manifest: Manifest, index):
        super().__init__(directory, manifest, index)
        self._pending_len = 0  # tokens appended since the last commit
        self._lock: WriterLock | None = None  # held from open() until release()

    # ------------------------------------------------------------------ opening and closing
    @classmethod
    def open(cls, directory: Path, usearch, *, fingerprint: str | None = None, create: dict | None = None,
             wait: bool = False, verify: bool = False) -> "StoreWriter":
        """The store in `directory` (made there from `create` when it has no manifest), under its writer
        lock: a second writer gets StoreBusyError, or waits for the first with `wait`."""
        if not (directory / MANIFEST).exists():
            check_new_store(directory, create)  # before the lock file is made there
            directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory, wait=wait)  # from here on, this process alone writes
        try:
            if not (directory / MANIFEST).exists():
                check_new_store(directory, create)  # again under the lock: a writer before us may have made files
                store = cls.create(directory, usearch, create)
            else:
                store = cls.load(directory, usearch, fingerprint=fingerprint, verify=verify)
        except BaseException:
            lock.release()
            raise
        store._lock = lock
        return store

    @classmethod
    def create(cls, directory: Path, usearch, create: dict) -> "StoreWriter":
        """A new, empty store committed in `directory` (model_fingerprint, model_name, n_embd[, dtype, key_layer])."""
        fields = {k: v for k, v in create.items() if k != "dtype"}
        manifest = Manifest(dtype=create.get("dtype", DEFAULT_DTYPE), **fields)
        index = usearch.Index(ndim=manifest.n_embd, metric=manifest.metric, dtype=manifest.dtype)
        store = cls(directory, manifest, index)
        store.commit()
        return store

    def _opened(self) -> None:
        self._clean_leftovers()

    def release(self) -> None:
        """Give up the writer lock; also done when the process exits."""
        if self._lock is not None:
            if self._passages is not None:
                try:
                    self._passages.checkpoint()
                except sqlite3.OperationalError:  # no room to fold the log in: readers still read it
                    pass
            self._lock.release()
            self._lock = None

    def mark_indexing(self, running: bool) -> None:
        mark_indexing(self.dir, running)

    def _clean_leftovers(self, committed: Manifest | None = None) -> None:
        """After a crash: drop uncommitted tail bytes and files no manifest points at (`committed`: the
        manifest on disk, where this one holds uncommitted changes)."""
        committed = committed or self.manifest
        path = self.dir / TOKENS
        if path.exists() and path.stat().st_size > 4 * committed.n_tokens:
            with path.open("r+b") as f:
                f.truncate(4 * committed.n_tokens)
        for p in self.dir.iterdir():
            if (p.name.startswith("index-") and p.name != committed.index_file) or p.name.endswith(".tmp"):
                p.unlink()
        self.passages.prune({d.path: d.start for d in committed.documents.values()})

    def discard_uncommitted(self) -> Manifest:
        """After a write failed (a full disk): the files as of the last commit, what was written since
        removed; the committed manifest is returned (this object is not to be used further)."""
        committed = Manifest.load(self.dir)
        self._clean_leftovers(committed)
        return committed

    # ------------------------------------------------------------------ documents
    def add_document(self, entry: DocEntry, tokens: np.ndarray, key_states: np.ndarray | None,
                     passages: list[PassageSpan] = ()) -> DocEntry:
        """Append a document: tokens [T] int32 and key_states [T-1, n_embd] (position i predicts token i+1),
        and its passages (spans relative to the document; `entry.pages` relative too). With key_states
        None the document is searchable by words only until `add_keys` gives its states.

        `entry.start/end` are assigned here. Nothing is durable until `commit()`.
        """
        start = self.manifest.n_tokens + self._pending_len
        entry.start, entry.end = start, start + len(tokens)
        entry.keyed = False
        if key_states is not None:
            self._add_vectors(entry, key_states)
        with (self.dir / TOKENS).open("ab") as f:
            if self._pending_len == 0:
                f.truncate(4 * self.manifest.n_tokens)
            f.write(np.asarray(tokens, np.int32).tobytes())
        self._pending_len += len(tokens)
        entry.pages = [start + p for p in entry.pages]
        self.passages.add(entry.path, start, passages, entry.pages)
        entry.passages_sha256 = passages_digest(s.text for s in sorted(passages, key=lambda s: s.start))
        self.manifest.documents[entry.path] = entry
        self._spans = self._passage_spans = None
        return entry

    def add_keys(self, path: str, key_states: np.ndarray) -> None:
        """The key states [T-1, n_embd] of a document added without them."""
        entry = self.manifest.documents[path]
        if entry.keyed:
            raise StoreError(f"{path}: its key states are stored already")
        self._add_vectors(entry, key_states)

    def _add_vectors(self, entry: DocEntry, key_states: np.ndarray) -> None:
        if len(key_states) != max(entry.n_tokens - 1, 0):
            raise ValueError(f"{entry.path}: {len(key_states)} key states for {entry.n_tokens} tokens")
        if len(key_states):
            keys = np.arange(entry.start, entry.start + len(key_states), dtype=np.uint64)
            self.index.add(keys, np.ascontiguousarray(key_states, dtype=np.float32), threads=self.add_threads)
        entry.keyed = True

    def remove_document(self, path: str) -> DocEntry | None:
        entry = self.manifest.documents.pop(path, None)
        self._spans = self._passage_spans = None
        if entry is not None and entry.keyed and entry.end - entry.start > 1:
            keys = np.arange(entry.start, entry.end - 1, dtype=np.uint64)
            self.index.remove(keys)
        return entry

    def fill_missing_passages(self, piece_of) -> int:
        """Passages for documents that have none (indexed before passages existed), cut from the
        stored tokens: no model run. Returns how many documents were filled."""
        have = self.passages.doc_starts()
        missing = [e for e in self.manifest.documents.values() if e.start not in have]
        for entry in missing:
            spans = split_passages(self.tokens(entry.start, entry.end), piece_of,
                                   breaks=[p - entry.start for p in entry.pages])
            self.passages.add(entry.path, entry.start, spans, entry.pages)
            entry.passages_sha256 = passages_digest(s.text for s in sorted(spans, key=lambda s: s.start))
        if missing:
            self.passages.commit()
            self._passage_spans = None
        return len(missing)

    # ------------------------------------------------------------------ committing
    def commit(self) -> None:
        """Make everything added or removed so far durable (see store.py's docstring)."""
        old = self.dir / self.manifest.index_file
        new_gen = self.manifest.generation + 1
        new_name = f"index-{new_gen}.usearch"
        self._save_index(self.dir / (new_name + ".tmp"), self.dir / new_name)
        tokens_path = self.dir / TOKENS
        if tokens_path.exists():
            with tokens_path.open("rb") as f:
                os.fsync(f.fileno())
        self.passages.commit()  # before the manifest: rows may run ahead of it, never behind
        self.manifest.generation = new_gen
        self.manifest.n_tokens += self._pending_len
        self.manifest.files = {
            new_name: record_index(self.dir / new_name),
            TOKENS: record_tokens(tokens_path, 4 * self.manifest.n_tokens),
        }
        self.manifest.save(self.dir)
        self._manifest_stamp = self._stamp()
        self._pending_len = 0
        if old.exists() and old.name != new_name:
            old.unlink()
        self._tokens = self._map_tokens()

    def _save_index(self, tmp: Path, final: Path) -> None:
        """The index written to `tmp`, made durable, then renamed to `final` (a full disk: OSError)."""
        try:
            self.index.save(str(tmp))
        except RuntimeError:
            no_room = room_error(self.dir, self.index.serialized_length)
            if no_room is None:
                raise
            raise no_room from None
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(final)
