"""Whole-store checks and rebuilds: `index --verify` (verify_store) and `index --repair` (repair_store)."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..engine import Engine
from ..errors import SenseError
from .index_report import IndexReport
from .indexer import ProgressFn, index_paths
from .manifest import Manifest, StoreError
from .store import DocumentStore
from .writer_lock import WriterLock


def verify_store(store_dir: Path, fingerprint: str | None = None) -> dict:
    """Re-hash every file the manifest points at (and SQLite's check of the passages); raise StoreError
    naming a damaged file. Returns what was checked."""
    store = DocumentStore.open(store_dir, fingerprint=fingerprint, verify=True)
    store.passages.count(store.live_documents())  # the passages table answers
    return {"store": str(store_dir), "documents": len(store.manifest.documents), "tokens": store.manifest.n_tokens,
            "vectors": store.n_vectors, "key_layer": store.manifest.key_layer, "unkeyed": len(store.unkeyed()),
            "files": sorted(store.manifest.files)}


def repair_store(engine: Engine, store_dir: str | Path, *, progress: ProgressFn | None = None,
                 dtype: str | None = None, wait: bool = False) -> IndexReport:
    """Rebuild a damaged store from its documents: the manifest names them, the model re-reads them.

    The new store is built beside the old one and swapped in by two renames under the writer lock;
    the damaged copy is then deleted. Documents that no longer exist are dropped (and reported)."""
    store_dir = Path(store_dir).expanduser()
    if not store_dir.is_dir():
        raise SenseError(f"{store_dir}: no such store")
    lock = WriterLock(store_dir, wait=wait)
    try:
        try:
            manifest = Manifest.load(store_dir)
        except StoreError:
            raise StoreError(f"{store_dir}: the manifest is damaged, so the documents it held are unknown; "
                             "delete the store and index your folders again") from None
        if manifest.model_fingerprint != engine.fingerprint:
            raise StoreError(f"{store_dir}: documents indexed with model '{manifest.model_name}'; repair it with "
                             "that model (--model)")
        engine.use_key_layer(manifest.key_layer)  # the rebuilt store keeps the layer it had
        paths = [p for p in manifest.documents if Path(p).exists()]
        gone = [p for p in manifest.documents if not Path(p).exists()]
        fresh = store_dir.with_name(store_dir.name + ".repairing")
        if fresh.exists():
            shutil.rmtree(fresh)
        report = index_paths(engine, fresh, paths, progress=progress, dtype=dtype or manifest.dtype) if paths \
            else IndexReport()
        if not paths:  # nothing left to index: an empty store of this model
            DocumentStore.open(fresh, writable=True, create={
                "model_fingerprint": manifest.model_fingerprint, "model_name": manifest.model_name,
                "n_embd": manifest.n_embd, "dtype": manifest.dtype, "key_layer": manifest.key_layer}).release()
        old = store_dir.with_name(store_dir.name + ".damaged")
        if old.exists():
            shutil.rmtree(old)
        store_dir.rename(old)
        fresh.rename(store_dir)
        shutil.rmtree(old, ignore_errors=True)
        report.removed = gone
        return report
    finally:
        lock.release()
