"""Index the user's documents into a DocumentStore: incremental, resumable, with progress.

Words first: each new document's tokens and passages are committed before the model reads any of
them, so grounded chat (BM25) and lexical drafting find a document at once. Then keys: each
document is run through the target model in windows of `window` tokens that overlap by `overlap`
(every position after the first window still sees `overlap` tokens of left context), and the key
state of every position (the engine's key layer) is stored under its global position. Commits
happen every `commit_every` seconds and at the end: a crash loses at most that much work, and the
next run resumes (finished documents are recognised by size, mtime and sha256; documents without
keys are picked up again).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine import Engine
from ..errors import SenseError
from .disk_full import disk_full_error, out_of_room, reason
from .extract import MAX_FILE_BYTES, SkipFile, extract_text, iter_files
from .integrity import file_sha256
from .manifest import DocEntry, StoreError
from .passages import split_passages
from .store import DEFAULT_DTYPE, DocumentStore

WINDOW = 1024
OVERLAP = 32
COMMIT_EVERY = 20.0  # seconds between commits: a crash loses at most this much work


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
    unkeyed: int = 0  # documents searchable by words only when the run ended (cancelled: the next run goes on)
    owed: int = 0  # of those, documents an earlier run left that this run was not asked to read
    owed_tokens: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "removed": self.removed,
            "unchanged": self.unchanged, "skipped": self.skipped, "tokens": self.tokens,
            "seconds": round(self.seconds, 3), "tok_per_s": round(self.tok_per_s, 1),
            "store_vectors": self.store_vectors, "store_bytes": self.store_bytes, "unkeyed": self.unkeyed,
            "owed": self.owed, "owed_tokens": self.owed_tokens,
        }


def hidden_states(engine: Engine, tokens: np.ndarray, window: int = WINDOW, overlap: int = OVERLAP,
                  on_window: Callable[[int], None] | None = None) -> np.ndarray:
    """[T-1, n_embd] key states (at the engine's key layer) of positions 0..T-2, each of which predicts
    the following token; `on_window(positions done)` after each window."""
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
        if on_window is not None:
            on_window(end)
    return out


ProgressFn = Callable[[int, int, str], None]  # (tokens done, tokens total, current path)


@dataclass(frozen=True)
class PassState:
    """Where the model's pass stands, document by document: a snapshot handed to `on_pass` each time
    it moves (a document begun, a window read, a document read, a commit). Search uses committed
    keys only, so a document read since the last commit is not yet searched by them."""

    reading: str = ""  # the document the model reads now ("" between documents)
    reading_done: int = 0  # its positions read so far
    reading_total: int = 0  # its positions to read (tokens - 1)
    read: frozenset[str] = frozenset()  # read since the last commit: keys stored, not yet durable
    saved: frozenset[str] = frozenset()  # read and committed during this pass
    queued: tuple[str, ...] = ()  # still to read, in the order the model reads them


def document_state(path: str, keyed: bool, run: PassState | None = None) -> str:
    """A document's state in words: `keyed` as the committed manifest says, `run` the pass under way
    (None when none is). The one spelling of these states for every front end."""
    if keyed or (run is not None and path in run.saved):
        return "indexed"
    if run is not None:
        if path == run.reading:
            return f"reading now ({100 * run.reading_done // max(run.reading_total, 1)}%)"
        if path in run.read:
            return "read, saved at the next commit"
        if path in run.queued:
            return "by words only (queued)"
    return "by words only (the model reads it next)"


def index_paths(
    engine: Engine,
    store_dir: Path,
    paths: Iterable[str | Path],
    *,
    progress: ProgressFn | None = None,
    commit_every: float = COMMIT_EVERY,
    max_file_bytes: int = MAX_FILE_BYTES,
    dtype: str = DEFAULT_DTYPE,
    cancel=None,
    wait: bool = False,
    on_searchable: Callable[[int], None] | None = None,
    on_pass: Callable[[PassState], None] | None = None,
    finish_keys: bool = True,
    on_owed: Callable[[int, int, bool], None] | None = None,
) -> IndexReport:
    """Index `paths` (files or folders) into the store at `store_dir`, made if missing. Words first,
    then keys: `on_searchable(n documents)` is called once the new documents are committed with their
    tokens and passages (grounded chat finds them), then the model's pass adds their key states;
    `progress(done, total, path)` follows that pass in tokens and `on_pass(PassState)` document by
    document. A store made earlier keeps its key layer: the engine switches to it.
    Documents an interrupted run left without keys are read too, unless `finish_keys` is False: then
    only those under `paths` are, and the rest stay searchable by words for a later run (the report's
    `owed`); `on_owed(documents, tokens, reading_now)` is told about them either way, before the pass."""
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
    try:
        store = DocumentStore.open(
            store_dir,
            fingerprint=info.fingerprint,
            writable=True,
            create={"model_fingerprint": info.fingerprint, "model_name": info.name, "n_embd": engine.n_embd,
                    "dtype": dtype, "key_layer": engine.key_layer},
            wait=wait,
        )
    except Exception as exc:
        if out_of_room(exc):  # no room for even an empty store: nothing was committed
            raise StoreError(f"{store_dir}: no room to write ({reason(exc)}); no store was made") from None
        raise
    engine.use_key_layer(store.manifest.key_layer)
    try:
        store.mark_indexing(True)
        return _index(engine, store, roots, report, t0, progress, commit_every, max_file_bytes, cancel, on_searchable,
                      on_pass, finish_keys, on_owed)
    except Exception as exc:
        if out_of_room(exc):  # back to the last commit, said in one line
            raise disk_full_error(store, exc) from None
        raise
    finally:
        store.mark_indexing(False)
        store.release()


def _index(engine, store, roots, report, t0, progress, commit_every, max_file_bytes, cancel, on_searchable,
           on_pass, finish_keys=True, on_owed=None) -> IndexReport:
    manifest = store.manifest

    # 1. What changed: new, modified, deleted (deleted = known under these roots but gone).
    seen: set[str] = set()
    todo: list[tuple[Path, str, object]] = []  # (path, sha256, stat)
    for path in iter_files(roots):
        key = str(path)
        seen.add(key)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in the name (PEP 383 escapes): nothing can store it
            shown = key.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
            report.skipped[shown] = "file name is not valid UTF-8; rename the file to index it"
            continue
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

    # 3. Words first: every document's tokens and passages (committed every `commit_every` seconds and
    # at the end). From here on grounded chat finds them (BM25) and lexical drafting copies from them,
    # before the model has read them.
    last_commit = time.perf_counter()
    for entry, tokens, kind in jobs:
        if kind == "updated":
            store.remove_document(entry.path)
        store.add_document(entry, tokens, None, split_passages(tokens, engine.piece, breaks=entry.pages))
        getattr(report, kind).append(entry.path)
        report.skipped.pop(entry.path, None)
        if time.perf_counter() - last_commit > commit_every:
            store.commit()
            last_commit = time.perf_counter()
    manifest.skipped = dict(report.skipped)
    store.commit()
    if on_searchable is not None:
        on_searchable(len(jobs))

    # 4. Keys: the model's pass over every document without them (this run's, and any that an
    # interrupted run left: all of them, or with finish_keys=False those under this run's paths),
    # committed every `commit_every` seconds.
    this_run = {entry.path for entry, _, _ in jobs}
    pending, owed = [], []
    for d in store.unkeyed():
        asked = d.path in this_run or finish_keys or any(Path(d.path).is_relative_to(r) for r in roots)
        (pending if asked else owed).append(d)
    earlier = [d for d in pending if d.path not in this_run]
    if on_owed is not None and (earlier or owed):
        on_owed(len(earlier) + len(owed), sum(d.n_tokens for d in earlier + owed), not owed)
    report.owed, report.owed_tokens = len(owed), sum(d.n_tokens for d in owed)
    total = sum(d.n_tokens for d in pending)
    done = 0
    last_commit = time.perf_counter()
    commit_cost = 0.0  # seconds the latest commit took
    queued = [d.path for d in pending]
    read: set[str] = set()  # keys stored since the last commit
    saved: set[str] = set()

    def tell(reading: str = "", n: int = 0, of: int = 0) -> None:
        if on_pass is not None:
            on_pass(PassState(reading, n, of, frozenset(read), frozenset(saved), tuple(queued)))

    if progress:
        progress(0, total, "")
    tell()
    try:
        for entry in pending:
            if cancel is not None and cancel.is_set():
                break
            te = time.perf_counter()
            queued.pop(0)
            tell(entry.path, 0, entry.n_tokens - 1)

            def window_done(n: int, entry=entry) -> None:
                if progress:
                    progress(done + n, total, entry.path)
                tell(entry.path, n, entry.n_tokens - 1)

            hidden = hidden_states(engine, store.tokens(entry.start, entry.end), on_window=window_done)
            report.eval_seconds += time.perf_counter() - te
            store.add_keys(entry.path, hidden)
            read.add(entry.path)
            done += entry.n_tokens
            report.tokens += entry.n_tokens
            if progress:
                progress(done, total, entry.path)
            tell()
            if time.perf_counter() - last_commit > max(commit_every, 10 * commit_cost):
                tc = time.perf_counter()
                store.commit()  # rewrites the whole index: on a large store spaced out to stay under ~10% of the time
                last_commit = time.perf_counter()
                commit_cost = last_commit - tc
                saved.update(read)
                read.clear()
                tell()
    except KeyboardInterrupt:  # Ctrl+C: what was read is kept (a partly read document is read again next run)
        store.commit()
        raise
    store.commit()
    saved.update(read)
    read.clear()
    tell()
    if pending and not (cancel is not None and cancel.is_set()):
        from ..grounding.retrieve import PassageRetriever  # grounding reads stores; a call, not a layer

        PassageRetriever(engine, store).warm_gate()  # the relevance gate's background, before any question
    engine.reset()
    report.seconds = time.perf_counter() - t0
    report.store_vectors = store.n_vectors
    report.store_bytes = store.disk_bytes()
    report.unkeyed = len(store.unkeyed())
    return report


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
    import shutil

    from .manifest import Manifest, StoreError
    from .writer_lock import WriterLock

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
