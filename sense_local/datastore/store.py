"""A document store: the target's hidden states in a USearch index, keyed by global token position.

Directory layout:
  manifest.json            the commit point (see manifest.py)
  tokens.i32               the token stream of every document, int32, append-only
  index-<gen>.usearch      HNSW index: key p -> final hidden state at position p, which predicts
                           token p+1 (only positions whose next token is in the same document)
  passages.sqlite          passages (FTS5) for grounded chat; rows count only while the manifest
                           holds their document (see passages.py)
Writes never modify committed bytes: tokens are appended past the committed length, a new index
generation is saved under a new name, then the manifest is replaced atomically, then the old
generation is deleted. A crash at any point leaves the previous store loadable and consistent.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import native
from ..key_tap import layer_name
from .disk_full import room_error
from .manifest import MANIFEST, DocEntry, Manifest, StoreError
from .passages import PassageSpan, PassageTable, passages_digest, split_passages
from .integrity import check_passages_db, damaged, record_index, record_tokens, unclean_shutdown, verify_files
from .passages import PASSAGES_DB
from .writer_lock import LOCK, WriterLock

TOKENS = "tokens.i32"
INDEXING = "indexing.json"  # present (with a live pid) while an indexer runs on this store
DTYPES = ("f32", "f16", "i8")  # vector types an index may hold
DEFAULT_DTYPE = "i8"  # measured: next-token recall@8 0.98-1.00 of f32 at 10k-56k vectors, half of f16's memory
# HNSW search breadth (usearch's expansion_search, default 64). Measured on 56k real hidden states:
# next-token recall@8 0.662 at 32 vs 0.664 at 64; on a 1M-vector store, search p50 0.66 vs 1.21 ms.
SEARCH_BREADTH = 32


@dataclass
class Neighbours:
    """Search results for n queries, k neighbours each (missing neighbours have position -1)."""

    similarity: np.ndarray  # [n, k] float32 cosine similarity
    positions: np.ndarray  # [n, k] int64 global token positions of the neighbours
    continuations: np.ndarray  # [n, k, L] int32 tokens after each neighbour (-1 past its document)


def _check_new_store(directory: Path, create: dict | None) -> None:
    """Where no manifest exists, a store is made only when asked (`create`), in a missing or empty
    folder (its writer lock aside); anything else is refused in one line."""
    if create is None:
        raise StoreError(f"{directory}: not a sense-local store (no {MANIFEST}); index documents first")
    if directory.exists() and (not directory.is_dir() or any(p.name != LOCK for p in directory.iterdir())):
        raise StoreError(f"{directory}: exists and is not a sense-local store; refusing to write there")


def _expected_vectors(manifest: Manifest) -> int:
    """One vector per position that predicts a token of its own document: n_tokens - 1 per keyed document."""
    return sum(max(d.n_tokens - 1, 0) for d in manifest.documents.values() if d.keyed)


class DocumentStore:
    def __init__(self, directory: Path, manifest: Manifest, index, writable: bool):
        self.dir = directory
        self.manifest = manifest
        self.index = index
        self.index.expansion_search = SEARCH_BREADTH
        self.writable = writable
        self._tokens = self._map_tokens()
        self._spans: tuple[np.ndarray, np.ndarray] | None = None  # sorted (starts, ends) of live documents
        self._pending_len = 0  # tokens appended since the last commit
        self._passages: PassageTable | None = None
        self._passage_spans: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see passage_spans
        self.gate_background = None  # the relevance gate's measurement of this store (grounding/gate.py)
        self._manifest_stamp = self._stamp()
        self._lock: WriterLock | None = None  # held while writable (see open)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        *,
        fingerprint: str | None = None,
        writable: bool = False,
        create: dict | None = None,
        wait: bool = False,
        verify: bool = False,
    ) -> "DocumentStore":
        """Open a store. `create` (model_fingerprint, model_name, n_embd[, dtype]) makes a new one
        where the directory is missing or empty; a directory with other content is refused.
        Writable opens take the store's writer lock (writer_lock.py): a second writer gets
        StoreBusyError, or waits for the first with `wait`. Every open checks the files the manifest
        points at (integrity.py); `verify` re-hashes all of them."""
        directory = Path(directory).expanduser()
        usearch = native.load_usearch()
        lock = None
        if writable:
            if not (directory / MANIFEST).exists():
                _check_new_store(directory, create)  # before the lock file is made there
                directory.mkdir(parents=True, exist_ok=True)
            lock = WriterLock(directory, wait=wait)  # from here on, this process alone writes
        try:
            store = cls._open_locked(directory, usearch, fingerprint, writable, create, verify)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        store._lock = lock
        return store

    def release(self) -> None:
        """Give up the writer lock (a writable store); also done when the process exits."""
        if self._lock is not None:
            if self._passages is not None:
                try:
                    self._passages.checkpoint()
                except sqlite3.OperationalError:  # no room to fold the log in: readers still read it
                    pass
            self._lock.release()
            self._lock = None

    @classmethod
    def _open_locked(cls, directory: Path, usearch, fingerprint, writable: bool, create, verify: bool) -> "DocumentStore":
        if not (directory / MANIFEST).exists():
            _check_new_store(directory, create)  # again under the lock: a writer before us may have made files
            manifest = Manifest(dtype=create.get("dtype", DEFAULT_DTYPE), **{k: v for k, v in create.items() if k != "dtype"})
            index = usearch.Index(ndim=manifest.n_embd, metric=manifest.metric, dtype=manifest.dtype)
            store = cls(directory, manifest, index, writable=True)
            store.commit()
            return store
        manifest = Manifest.load(directory)
        if fingerprint is not None and manifest.model_fingerprint != fingerprint:
            from ..registry import names_with_fingerprint

            names = names_with_fingerprint(manifest.model_fingerprint)
            pick = f"run with --model {names[0]}" if names else "load that model again"
            raise StoreError(
                f"{directory}: documents indexed with model '{manifest.model_name}' "
                f"(fingerprint {manifest.model_fingerprint[:12]}), not the loaded model ({fingerprint[:12]}): "
                f"{pick} to use them, or re-index them for this model (sense-local index --store {directory} PATH...)"
            )
        full = verify or unclean_shutdown(directory)
        verify_files(directory, manifest, full=full)
        check_passages_db(directory / PASSAGES_DB)
        path = directory / manifest.index_file
        try:
            index = usearch.Index.restore(str(path), view=not writable)
        except (ValueError, RuntimeError, OSError) as exc:
            raise damaged(directory, manifest.index_file, f"USearch cannot load it: {exc}") from None
        if index is None:
            raise damaged(directory, manifest.index_file, "not a USearch index")
        if len(index) != _expected_vectors(manifest):
            raise damaged(directory, manifest.index_file,
                          f"{len(index)} vectors, the manifest's documents need {_expected_vectors(manifest)}")
        store = cls(directory, manifest, index, writable)
        if writable:
            store._clean_leftovers()
        store._verify_passages(fts_check=verify)
        return store

    def _verify_passages(self, fts_check: bool) -> None:
        """Every committed document's passage rows hash to what the manifest recorded (a digest over
        their texts: milliseconds per million tokens); `fts_check` also runs FTS5's own index check."""
        import sqlite3

        try:
            have = self.passages.digests()
            if fts_check:
                self.passages.fts_integrity()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"{self.dir / PASSAGES_DB}: cannot be read ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise damaged(self.dir, PASSAGES_DB, f"SQLite: {exc}") from None
        none = passages_digest([])
        for entry in self.manifest.documents.values():
            got = have.get((entry.path, entry.start), none)
            if entry.passages_sha256 and got != entry.passages_sha256:
                raise damaged(self.dir, PASSAGES_DB, f"the passages of {entry.path} differ from the manifest's")

    def _stamp(self) -> int:
        try:
            return (self.dir / MANIFEST).stat().st_mtime_ns
        except OSError:
            return 0

    def refreshed(self) -> "DocumentStore":
        """This store, or a fresh read-only view if another writer (an indexer) committed since it was
        opened: a chat sees what is indexed so far while indexing runs."""
        if self.writable or self._stamp() == self._manifest_stamp:
            return self
        try:
            return DocumentStore.open(self.dir, fingerprint=self.manifest.model_fingerprint)
        except StoreError:
            return self

    def _map_tokens(self) -> np.ndarray:
        path = self.dir / TOKENS
        n = self.manifest.n_tokens
        if n == 0:
            return np.zeros(0, np.int32)
        if not path.exists() or path.stat().st_size < 4 * n:
            raise StoreError(f"{self.dir}: damaged store ({TOKENS} is shorter than the manifest says)")
        return np.memmap(path, dtype=np.int32, mode="r", shape=(n,))

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
        self._require_writable()
        committed = Manifest.load(self.dir)
        self._clean_leftovers(committed)
        return committed

    # ------------------------------------------------------------------ passages
    @property
    def passages(self) -> PassageTable:
        if self._passages is None:
            self._passages = PassageTable(self.dir)
        return self._passages

    def passage_spans(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, rowids) of the live passages, sorted by start; read once per document set."""
        if self._passage_spans is None:
            self._passage_spans = self.passages.span_arrays(self.live_documents())
        return self._passage_spans

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

    def live_documents(self) -> dict[str, int]:
        """path -> global start of every committed document (what makes a passage row count)."""
        return {d.path: d.start for d in self.manifest.documents.values()}

    # ------------------------------------------------------------------ reading
    @property
    def n_vectors(self) -> int:
        return len(self.index)

    @property
    def token_array(self) -> np.ndarray:
        """[n_tokens] int32 memory-mapped token stream (committed part)."""
        return self._tokens

    def tokens(self, start: int, end: int) -> np.ndarray:
        return np.asarray(self._tokens[start:end])

    def search(self, hidden: np.ndarray, k: int = 8, continuation: int = 8) -> Neighbours:
        """hidden: [n, n_embd] queries. Returns the k nearest stored positions for each."""
        hidden = np.ascontiguousarray(np.atleast_2d(hidden), dtype=np.float32)
        n = len(hidden)
        positions = np.full((n, k), -1, np.int64)
        similarity = np.zeros((n, k), np.float32)
        if len(self.index) > 0:
            matches = self.index.search(hidden, k)
            keys = np.asarray(matches.keys, dtype=np.int64).reshape(n, -1)
            dist = np.asarray(matches.distances, dtype=np.float32).reshape(n, -1)
            # one query comes back as Matches (no .counts) even for a 2-D array
            counts = np.asarray(getattr(matches, "counts", [keys.shape[1]])).reshape(n)
            valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
            positions[:, : keys.shape[1]] = np.where(valid, keys, -1)
            similarity[:, : keys.shape[1]] = np.where(valid, 1.0 - dist, 0.0)
        return Neighbours(similarity, positions, self._continuations(positions, continuation))

    def _continuations(self, positions: np.ndarray, length: int) -> np.ndarray:
        """[n, k, L] tokens at positions p+1..p+L, -1 where unknown or past the document's end."""
        idx = positions[..., None] + 1 + np.arange(length)[None, None, :]  # [n, k, L]
        ends = self._doc_ends(positions)  # [n, k]
        ok = (positions[..., None] >= 0) & (idx < ends[..., None]) & (idx < len(self._tokens))
        out = np.full(idx.shape, -1, np.int32)
        out[ok] = np.asarray(self._tokens)[idx[ok]]
        return out

    def _doc_ends(self, positions: np.ndarray) -> np.ndarray:
        """[same shape] end of the live document holding each position (0 where none does)."""
        if self._spans is None:  # computed once per change of the document set, not per search
            docs = sorted(self.manifest.documents.values(), key=lambda d: d.start)
            self._spans = (np.array([d.start for d in docs], np.int64), np.array([d.end for d in docs], np.int64))
        starts, ends = self._spans
        if len(starts) == 0:
            return np.zeros_like(positions)
        which = np.clip(np.searchsorted(starts, positions, side="right") - 1, 0, len(starts) - 1)
        return np.where(positions >= starts[which], ends[which], 0)

    def indexing_status(self) -> dict | None:
        """{"pid", "started"} while an indexer is running on this store, else None."""
        try:
            status = json.loads((self.dir / INDEXING).read_text())
            os.kill(int(status["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return status

    def mark_indexing(self, running: bool) -> None:
        path = self.dir / INDEXING
        if running:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
            tmp.replace(path)
        else:
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def add_document(self, entry: DocEntry, tokens: np.ndarray, hidden: np.ndarray | None,
                     passages: list[PassageSpan] = ()) -> DocEntry:
        """Append a document: tokens [T] int32 and hidden [T-1, n_embd] (position i predicts token i+1),
        and its passages (spans relative to the document; `entry.pages` relative too). With hidden
        None the document is searchable by words only until `add_keys` gives its states.

        `entry.start/end` are assigned here. Nothing is durable until `commit()`.
        """
        self._require_writable()
        start = self.manifest.n_tokens + self._pending_len
        entry.start, entry.end = start, start + len(tokens)
        entry.keyed = False
        if hidden is not None:
            self._add_vectors(entry, hidden)
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

    def add_keys(self, path: str, hidden: np.ndarray) -> None:
        """The key states [T-1, n_embd] of a document added without them."""
        self._require_writable()
        entry = self.manifest.documents[path]
        if entry.keyed:
            raise StoreError(f"{path}: its key states are stored already")
        self._add_vectors(entry, hidden)

    def _add_vectors(self, entry: DocEntry, hidden: np.ndarray) -> None:
        if len(hidden) != max(entry.n_tokens - 1, 0):
            raise ValueError(f"{entry.path}: {len(hidden)} key states for {entry.n_tokens} tokens")
        if len(hidden):
            keys = np.arange(entry.start, entry.start + len(hidden), dtype=np.uint64)
            self.index.add(keys, np.ascontiguousarray(hidden, dtype=np.float32))
        entry.keyed = True

    def unkeyed(self) -> list[DocEntry]:
        """Documents searchable by words only (their key states not yet stored), oldest first."""
        return sorted((d for d in self.manifest.documents.values() if not d.keyed), key=lambda d: d.start)

    def require_key_layer(self, layer: int | None) -> None:
        """Refuse to compare states read at `layer` with this store's keys read at another layer."""
        have = self.manifest.key_layer
        if have != layer:
            raise StoreError(f"{self.dir}: its keys are states of {layer_name(have)}, these of {layer_name(layer)}; "
                             "open it through the runtime (it reads the store's layer) or re-index it")

    def remove_document(self, path: str) -> DocEntry | None:
        self._require_writable()
        entry = self.manifest.documents.pop(path, None)
        self._spans = self._passage_spans = None
        if entry is not None and entry.keyed and entry.end - entry.start > 1:
            keys = np.arange(entry.start, entry.end - 1, dtype=np.uint64)
            self.index.remove(keys)
        return entry

    def commit(self) -> None:
        """Make everything added or removed so far durable (see the module docstring)."""
        self._require_writable()
        old = self.dir / self.manifest.index_file
        new_gen = self.manifest.generation + 1
        new_name = f"index-{new_gen}.usearch"
        tmp = self.dir / (new_name + ".tmp")
        try:
            self.index.save(str(tmp))
        except RuntimeError:
            no_room = room_error(self.dir, self.index.serialized_length)
            if no_room is None:
                raise
            raise no_room from None
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(self.dir / new_name)
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

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.dir}: store opened read-only")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())
