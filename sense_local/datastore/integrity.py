"""Store integrity: what a commit records about its files, and how an open checks them.

At each commit the manifest records, per file it points at:
  index-<gen>.usearch   size, mtime_ns and sha256 (the file is written once and never changed)
  tokens.i32            the committed byte count and the sha256 of that prefix (later writers
                        only append past it)
Opening a store checks cheaply: sizes always, the token prefix's sha256 always (4 bytes a token:
milliseconds), and the index's sha256 when its size or mtime differ from the record, after an
unclean shutdown (an indexer died holding the store), or when asked (`index --verify`).
passages.sqlite is changed in place by writers, so it is checked by SQLite itself (quick_check), and
its rows against the digest of each document's passages the manifest keeps.
A damaged file is reported in one line naming it and the repair command.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from .manifest import Manifest, StoreError
from .passages import PASSAGES_DB, passages_digest

CHUNK = 1 << 20


def file_sha256(path: Path, n_bytes: int | None = None) -> str:
    """sha256 of a file, or of its first `n_bytes` (the one hash of files in a store: documents, index, tokens)."""
    digest = hashlib.sha256()
    left = n_bytes
    with path.open("rb") as f:
        while left is None or left > 0:
            block = f.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def record_index(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def record_tokens(path: Path, n_bytes: int) -> dict:
    return {"bytes": n_bytes, "sha256": file_sha256(path, n_bytes) if n_bytes else hashlib.sha256().hexdigest()}


def damaged(directory: Path, name: str, what: str) -> StoreError:
    return StoreError(f"{directory / name}: damaged store file ({what}); "
                      f"rebuild it with: sense-local index --repair --store {directory}")


def verify_files(directory: Path, manifest: Manifest, *, full: bool = False) -> None:
    """Raise StoreError naming the first damaged file; `full` re-hashes the index whatever its stat says."""
    index_name = manifest.index_file
    index_path = directory / index_name
    if not index_path.exists():
        raise damaged(directory, index_name, "missing")
    record = manifest.files.get(index_name)
    if record:
        st = index_path.stat()
        if st.st_size != record["size"]:
            raise damaged(directory, index_name, f"{st.st_size} bytes, the manifest says {record['size']}")
        if (full or st.st_mtime_ns != record["mtime_ns"]) and file_sha256(index_path) != record["sha256"]:
            raise damaged(directory, index_name, "its sha256 differs from the manifest's")
    tokens_path = directory / "tokens.i32"
    need = 4 * manifest.n_tokens
    if need:
        size = tokens_path.stat().st_size if tokens_path.exists() else -1
        if size < need:
            raise damaged(directory, "tokens.i32", f"{max(size, 0)} bytes, the manifest needs {need}")
        record = manifest.files.get("tokens.i32")
        if record and record["bytes"] == need and file_sha256(tokens_path, need) != record["sha256"]:
            raise damaged(directory, "tokens.i32", "its committed tokens' sha256 differs from the manifest's")


def check_passages_db(path: Path) -> None:
    """SQLite's own quick check of passages.sqlite (missing is fine: it is created on first use)."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(path, timeout=30)  # not read-only: a crashed writer's WAL may need recovery
        try:
            # A file shorter than its header's page count is truncated. quick_check reads the missing
            # tail as zeros, and inside FTS5's index blobs zeros pass it while they change answers.
            # (Told only when no write-ahead log holds pages the file does not have yet; the file is
            # never opened outside SQLite, whose POSIX locks a second open-and-close would drop.)
            wanted = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
            wal = path.with_name(path.name + "-wal")
            size = path.stat().st_size
            if (not wal.exists() or wal.stat().st_size == 0) and size < wanted:
                raise damaged(path.parent, path.name, f"truncated ({size} of {wanted} bytes)")
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError as exc:  # busy or unreadable, not damaged
        raise StoreError(f"{path}: cannot be read ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise damaged(path.parent, path.name, f"not a readable SQLite database: {exc}") from None
    if verdict != "ok":
        raise damaged(path.parent, path.name, f"SQLite quick_check: {verdict}")



def verify_passages(directory: Path, passages, manifest: Manifest, *, fts_check: bool) -> None:
    """Every committed document's passage rows (a PassageTable) hash to what the manifest recorded (a
    digest over their texts: milliseconds per million tokens); `fts_check` also runs FTS5's own check."""
    try:
        have = passages.digests()
        if fts_check:
            passages.fts_integrity()
    except sqlite3.OperationalError as exc:
        raise StoreError(f"{directory / PASSAGES_DB}: cannot be read ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise damaged(directory, PASSAGES_DB, f"SQLite: {exc}") from None
    none = passages_digest([])
    for entry in manifest.documents.values():
        got = have.get((entry.path, entry.start), none)
        if entry.passages_sha256 and got != entry.passages_sha256:
            raise damaged(directory, PASSAGES_DB, f"the passages of {entry.path} differ from the manifest's")
