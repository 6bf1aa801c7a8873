"""A document store: the target's key states in a USearch index, keyed by global token position.

Directory layout:
  manifest.json            the commit point (see manifest.py)
  tokens.i32               the token stream of every document, int32, append-only
  index-<gen>.usearch      HNSW index: key p -> the key state at position p, which predicts
                           token p+1 (only positions whose next token is in the same document)
  passages.sqlite          passages (FTS5) for grounded chat; rows count only while the manifest
                           holds their document (see passages.py)
  writer.lock              held by the one process that writes (writer_lock.py)
  indexing.json            the running indexer's pid (indexing_marker.py)
Writes never modify committed bytes: tokens are appended past the committed length, a new index
generation is saved under a new name, then the manifest is replaced atomically, then the old
generation is deleted. A crash at any point leaves the previous store loadable and consistent.

Readers (store_reader.py) and the writer (store_writer.py) are apart; `DocumentStore.open` gives one
or the other.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import native
from .manifest import MANIFEST
from .store_reader import SEARCH_BREADTH, Neighbours, StoreReader
from .store_writer import DEFAULT_DTYPE, DTYPES, StoreWriter, check_new_store

__all__ = ["DEFAULT_DTYPE", "DTYPES", "SEARCH_BREADTH", "DocumentStore", "Neighbours", "StoreReader", "StoreWriter"]


class DocumentStore:
    """Where a store is opened: `DocumentStore.open(...)` gives a StoreReader, or a StoreWriter."""

    @staticmethod
    def open(
        directory: str | os.PathLike,
        *,
        fingerprint: str | None = None,
        writable: bool = False,
        create: dict | None = None,
        wait: bool = False,
        verify: bool = False,
    ) -> StoreReader:
        """Open a store. `create` (model_fingerprint, model_name, n_embd[, dtype]) makes a new one
        where the directory is missing or empty; a directory with other content is refused.
        Writable opens (a StoreWriter) take the store's writer lock (writer_lock.py): a second writer
        gets StoreBusyError, or waits for the first with `wait`. Every open checks the files the
        manifest points at (integrity.py); `verify` re-hashes all of them."""
        directory = Path(directory).expanduser()
        usearch = native.load_usearch()
        if writable:
            return StoreWriter.open(directory, usearch, fingerprint=fingerprint, create=create, wait=wait,
                                    verify=verify)
        if not (directory / MANIFEST).exists():
            check_new_store(directory, create)
            return StoreWriter.create(directory, usearch, create)  # made as asked (a writer, without the lock)
        return StoreReader.load(directory, usearch, fingerprint=fingerprint, verify=verify)
