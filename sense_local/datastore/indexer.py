"""Index the user's documents into a DocumentStore: incremental, resumable, with progress.

Each document is tokenized by the target model and run through it in windows of `window` tokens
that overlap by `overlap`, so every position after the first window still sees `overlap` tokens
of left context; the final hidden state of every position is stored under its global position.
Commits happen every `commit_every` seconds and at the end: a crash loses at most that much work,
and the next run resumes (finished documents are recognised by size, mtime and sha256).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import Engine
from ..errors import SenseError
from .extract import MAX_FILE_BYTES, SkipFile, extract_text, iter_files
from .manifest import DocEntry
from .passages import split_passages
from .store import DEFAULT_DTYPE, DocumentStore

WINDOW = 1024
OVERLAP = 32


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    tokens: int = 0  # tokens run through the model
    seconds: float = 0.0
    eval_seconds: float = 0.0  # time spent in the model (the rest is extraction, hashing, index)
    store_vectors: int = 0
    store_bytes: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "removed": self.removed,
            "unchanged": self.unchanged, "skipped": self.skipped, "tokens": self.tokens,
            "seconds": round(self.seconds, 3), "tok_per_s": round(self.tok_per_s, 1),
            "store_vectors": self.store_vectors, "store_bytes": self.store_bytes,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hidden_states(engine: Engine, tokens: np.ndarray, window: int = WINDOW, overlap: int = OVERLAP) -> np.ndarray:
    """[T-1, n_embd] final hidden states of positions 0..T-2 (each predicts the following token)."""
    n = len(tokens) - 1
    out = np.empty((max(n, 0), engine.n_embd), np.float32)
    fast = engine.hidden_pass(window)
    start = 0
    while start < n:
        ctx = 0 if start == 0 else overlap
        end = min(start + window - ctx, n)
        run = tokens[start - ctx : end]
        hidden = fast.run(run) if fast else engine.eval(run, 0, outputs="hidden", hidden=True).hidden
        out[start:end] = hidden[ctx:]
        start = end
    return out


ProgressFn = Callable[[int, int, str], None]  # (tokens done, tokens total, current path)


def index_paths(
    engine: Engine,
    store_dir: Path,
    paths: Iterable[str | Path],
    *,
    progress: ProgressFn | None = None,
    commit_every: float = 20.0,
    max_file_bytes: int = MAX_FILE_BYTES,
    dtype: str = DEFAULT_DTYPE,
    cancel=None,
    wait: bool = False,
) -> IndexReport:
    t0 = time.perf_counter()
    report = IndexReport()
    roots = []
    for p in paths:
        path = Path(p).expanduser()
        try:
            root = path.resolve()
        except (RuntimeError, OSError):  # a symlink loop given directly
            raise SenseError(f"{path}: cannot be followed (a symlink loop)") from None
        if not root.exists():
            raise SenseError(f"{root}: no such file or directory")
        roots.append(root)
    info = engine.info
    store = DocumentStore.open(
        store_dir,
        fingerprint=info.fingerprint,
        writable=True,
        create={"model_fingerprint": info.fingerprint, "model_name": info.name, "n_embd": engine.n_embd, "dtype": dtype},
        wait=wait,
    )
    store.mark_indexing(True)
    try:
        return _index(engine, store, roots, report, t0, progress, commit_every, max_file_bytes, cancel)
    finally:
        store.mark_indexing(False)
        store.release()


def _index(engine, store, roots, report, t0, progress, commit_every, max_file_bytes, cancel) -> IndexReport:
    manifest = store.manifest

    # 1. What changed: new, modified, deleted (deleted = known under these roots but gone).
    seen: set[str] = set()
    todo: list[tuple[Path, str, object]] = []  # (path, sha256, stat)
    for path in iter_files(roots):
        key = str(path)
        seen.add(key)
        try:
            st = path.stat()
        except OSError as exc:
            report.skipped[key] = f"unreadable ({exc.strerror or exc})"
            continue
        known = manifest.documents.get(key)
        if known and known.size == st.st_size and known.mtime == st.st_mtime:
            report.unchanged += 1
            continue
        if st.st_size > max_file_bytes:  # decided before any hashing or reading
            report.skipped[key] = f"too large ({st.st_size / 1e6:.0f} MB > {max_file_bytes / 1e6:.0f} MB limit)"
            continue
        try:
            sha = file_sha256(path)
        except OSError as exc:
            report.skipped[key] = f"unreadable ({exc.strerror or exc})"
            continue
        if known and known.sha256 == sha:  # touched, not changed
            known.mtime = st.st_mtime
            report.unchanged += 1
            continue
        todo.append((path, sha, st))
    store.fill_missing_passages(engine.piece)  # stores indexed before passages existed
    for key in list(manifest.documents):
        if key not in seen and any(Path(key).is_relative_to(r) for r in roots) and not Path(key).exists():
            store.remove_document(key)
            report.removed.append(key)

    # 2. Extract and tokenize everything first, so progress knows the total.
    jobs: list[tuple[DocEntry, np.ndarray, str]] = []
    for path, sha, st in todo:
        key = str(path)
        try:
            extracted = extract_text(path, max_file_bytes)
        except SkipFile as exc:
            report.skipped[key] = str(exc)
            continue
        tokens = np.asarray(engine.tokenize(extracted.text, add_special=True), dtype=np.int32)
        if len(tokens) < 2:
            report.skipped[key] = "too little text"
            continue
        entry = DocEntry(key, sha, st.st_mtime, st.st_size, 0, 0, note=extracted.note)
        if extracted.pages:  # char offsets of pages -> token offsets (approximate by proportion)
            scale = len(tokens) / max(len(extracted.text), 1)
            entry.pages = [int(c * scale) for c in extracted.pages]
        jobs.append((entry, tokens, "updated" if key in manifest.documents else "added"))
    total = sum(len(t) for _, t, _ in jobs)

    # 3. Run the model, add, commit periodically.
    done = 0
    last_commit = time.perf_counter()
    if progress:
        progress(0, total, "")
    for entry, tokens, kind in jobs:
        if cancel is not None and cancel.is_set():
            break
        te = time.perf_counter()
        hidden = hidden_states(engine, tokens)
        report.eval_seconds += time.perf_counter() - te
        if kind == "updated":
            store.remove_document(entry.path)
        store.add_document(entry, tokens, hidden, split_passages(tokens, engine.piece, breaks=entry.pages))
        getattr(report, kind).append(entry.path)
        report.skipped.pop(entry.path, None)
        done += len(tokens)
        report.tokens += len(tokens)
        if progress:
            progress(done, total, entry.path)
        if time.perf_counter() - last_commit > commit_every:
            store.commit()
            last_commit = time.perf_counter()
    manifest.skipped = dict(report.skipped)
    store.commit()
    engine.reset()
    report.seconds = time.perf_counter() - t0
    report.store_vectors = store.n_vectors
    report.store_bytes = store.disk_bytes()
    return report
