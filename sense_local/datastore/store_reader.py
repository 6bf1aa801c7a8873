"""Reading a committed store: its token stream (memory-mapped), key-state search with each
neighbour's continuation, and its passages. A StoreReader never writes; see store.py for the layout
and store_writer.py for the writer."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import native
from ..key_tap import layer_name
from .indexing_marker import indexing_status, unclean_shutdown
from .integrity import check_passages_db, damaged, verify_files, verify_passages
from .manifest import MANIFEST, DocEntry, Manifest, StoreError
from .passages import PASSAGES_DB, PassageTable

TOKENS = "tokens.i32"
# HNSW search breadth (usearch's expansion_search, default 64). Measured on 56k real key states:
# next-token recall@8 0.662 at 32 vs 0.664 at 64; on a 1M-vector store, search p50 0.66 vs 1.21 ms.
SEARCH_BREADTH = 32


@dataclass
class Neighbours:
    """Search results for n queries, k neighbours each (missing neighbours have position -1)."""

    similarity: np.ndarray  # [n, k] float32 cosine similarity
    positions: np.ndarray  # [n, k] int64 global token positions of the neighbours
    continuations: np.ndarray  # [n, k, L] int32 tokens after each neighbour (-1 past its document)


def expected_vectors(manifest: Manifest) -> int:
    """One vector per position that predicts a token of its own document: n_tokens - 1 per keyed document."""
    return sum(max(d.n_tokens - 1, 0) for d in manifest.documents.values() if d.keyed)


def _check_fingerprint(directory: Path, manifest: Manifest, fingerprint: str | None) -> None:
    """Refuse a store whose documents were indexed with another model, naming the --model that has them."""
    if fingerprint is None or manifest.model_fingerprint == fingerprint:
        return
    from ..registry import names_with_fingerprint

    names = names_with_fingerprint(manifest.model_fingerprint)
    pick = f"run with --model {names[0]}" if names else "load that model again"
    raise StoreError(
        f"{directory}: documents indexed with model '{manifest.model_name}' "
        f"(fingerprint {manifest.model_fingerprint[:12]}), not the loaded model ({fingerprint[:12]}): "
        f"{pick} to use them, or re-index them for this model (sense-local index --store {directory} PATH...)"
    )


def folder_bytes(directory: Path) -> int:
    """The size of the files in a store's folder."""
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


class StoreReader:
    writable = False

    def __init__(self, directory: Path, manifest: Manifest, index):
        self.dir = directory
        self.manifest = manifest
        self.index = index
        self.index.expansion_search = SEARCH_BREADTH
        self._tokens = self._map_tokens()
        self._spans: tuple[np.ndarray, np.ndarray] | None = None  # sorted (starts, ends) of live documents
        self._passages: PassageTable | None = None
        self._passage_spans: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see passage_spans
        self.gate_background = None  # the relevance gate's measurement of this store (grounding/gate.py)
        self._manifest_stamp = self._stamp()

    # ------------------------------------------------------------------ opening
    @classmethod
    def load(cls, directory: Path, usearch, *, fingerprint: str | None = None, verify: bool = False):
        """Open the committed store in `directory` as this class (`usearch`: native.load_usearch()): the
        manifest, the model's fingerprint, every file it points at (integrity.py; `verify` re-hashes all
        of them), the index (memory-mapped for readers) and the passages' digests."""
        manifest = Manifest.load(directory)
        _check_fingerprint(directory, manifest, fingerprint)
        verify_files(directory, manifest, full=verify or unclean_shutdown(directory))
        check_passages_db(directory / PASSAGES_DB)
        path = directory / manifest.index_file
        try:
            index = usearch.Index.restore(str(path), view=not cls.writable)
        except (ValueError, RuntimeError, OSError) as exc:
            raise damaged(directory, manifest.index_file, f"USearch cannot load it: {exc}") from None
        if index is None:
            raise damaged(directory, manifest.index_file, "not a USearch index")
        if len(index) != expected_vectors(manifest):
            raise damaged(directory, manifest.index_file,
                          f"{len(index)} vectors, the manifest's documents need {expected_vectors(manifest)}")
        store = cls(directory, manifest, index)
        store._opened()
        verify_passages(directory, store.passages, manifest, fts_check=verify)
        return store

    def _opened(self) -> None:
        """Called once the files are checked, before the passages are (a writer tidies up here)."""

    def _stamp(self) -> int:
        try:
            return (self.dir / MANIFEST).stat().st_mtime_ns
        except OSError:
            return 0

    def refreshed(self) -> "StoreReader":
        """This store, or a fresh read-only view if another writer (an indexer) committed since it was
        opened: a chat sees what is indexed so far while indexing runs."""
        if self.writable or self._stamp() == self._manifest_stamp:
            return self
        try:
            return StoreReader.load(self.dir, native.load_usearch(), fingerprint=self.manifest.model_fingerprint)
        except StoreError:
            return self

    def indexing_status(self) -> dict | None:
        """{"pid", "started"} while an indexer is running on this store, else None."""
        return indexing_status(self.dir)

    def _map_tokens(self) -> np.ndarray:
        path = self.dir / TOKENS
        n = self.manifest.n_tokens
        if n == 0:
            return np.zeros(0, np.int32)
        if not path.exists() or path.stat().st_size < 4 * n:
            raise StoreError(f"{self.dir}: damaged store ({TOKENS} is shorter than the manifest says)")
        return np.memmap(path, dtype=np.int32, mode="r", shape=(n,))

    # ------------------------------------------------------------------ documents and passages
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

    def live_documents(self) -> dict[str, int]:
        """path -> global start of every committed document (what makes a passage row count)."""
        return {d.path: d.start for d in self.manifest.documents.values()}

    def unkeyed(self) -> list[DocEntry]:
        """Documents searchable by words only (their key states not yet stored), oldest first."""
        return sorted((d for d in self.manifest.documents.values() if not d.keyed), key=lambda d: d.start)

    def require_key_layer(self, layer: int | None) -> None:
        """Refuse to compare states read at `layer` with this store's keys read at another layer."""
        have = self.manifest.key_layer
        if have != layer:
            raise StoreError(f"{self.dir}: its keys are states of {layer_name(have)}, these of {layer_name(layer)}; "
                             "open it through the runtime (it reads the store's layer) or re-index it")

    def disk_bytes(self) -> int:
        return folder_bytes(self.dir)

    # ------------------------------------------------------------------ tokens and search
    @property
    def n_vectors(self) -> int:
        return len(self.index)

    @property
    def token_array(self) -> np.ndarray:
        """[n_tokens] int32 memory-mapped token stream (committed part)."""
        return self._tokens

    def tokens(self, start: int, end: int) -> np.ndarray:
        return np.asarray(self._tokens[start:end])

    def search(self, key_states: np.ndarray, k: int = 8, continuation: int = 8) -> Neighbours:
        """hidden: [n, n_embd] queries. Returns the k nearest stored positions for each."""
        key_states = np.ascontiguousarray(np.atleast_2d(key_states), dtype=np.float32)
        n = len(key_states)
        positions = np.full((n, k), -1, np.int64)
        similarity = np.zeros((n, k), np.float32)
        if len(self.index) > 0:
            matches = self.index.search(key_states, k)
            keys = np.asarray(matches.keys, dtype=np.int64).reshape(n, -1)
            dist = np.asarray(matches.distances, dtype=np.float32).reshape(n, -1)
            # one query comes back as Matches (no .counts) even for a 2-D array
            counts = np.asarray(getattr(matches, "counts", [keys.shape[1]])).reshape(n)
            valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
            positions[:, : keys.shape[1]] = np.where(valid, keys, -1)
            dist = np.where(valid, dist, 1.0)  # past a query's count the slots hold garbage (NaN at times)
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
