"""Index the user's documents into a document store: incremental, resumable, with progress.

A run has four phases: (1) what changed under the given paths (new, modified, deleted files);
(2) the changed files' text extracted and tokenized; (3) words first: each new document's tokens and
passages are committed before the model reads any of them, so grounded chat (BM25) and lexical
drafting find a document at once; (4) keys: each document without them is run through the target
model in windows of `window` tokens that overlap by `overlap` (every position after the first window
still sees `overlap` tokens of left context), and the key state of every position (the engine's key
layer) is stored under its global position. Commits happen every `commit_every` seconds and at the
end: a crash loses at most that much work, and the next run resumes (finished documents are
recognised by size, mtime and sha256; documents without keys are picked up again).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import Engine
from ..errors import SenseError
from .disk_full import disk_full_error, out_of_room, reason
from .extract import MAX_FILE_BYTES, SkipFile, extract_text, iter_files
from .index_report import IndexReport, PassState
from .integrity import file_sha256
from .manifest import DocEntry, StoreError
from .passages import split_passages
from .store import DocumentStore
from .store_writer import DEFAULT_DTYPE, StoreWriter

WINDOW = 1024
OVERLAP = 32
COMMIT_EVERY = 20.0  # seconds between commits: a crash loses at most this much work

ProgressFn = Callable[[int, int, str], None]  # (tokens done, tokens total, current path)


def document_keys(engine: Engine, tokens: np.ndarray, window: int = WINDOW, overlap: int = OVERLAP,
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
        keys = fast.run(run) if fast else engine.eval(run, 0, outputs="keys", with_keys=True).keys
        out[start:end] = keys[ctx:]
        start = end
        if on_window is not None:
            on_window(end)
    return out


@dataclass(frozen=True)
class IndexRun:
    """What one index run is asked to do, and whom it tells as it goes (index_paths' arguments)."""

    roots: tuple[Path, ...]  # the files and folders given, resolved
    progress: ProgressFn | None = None  # the model pass in tokens
    commit_every: float = COMMIT_EVERY
    max_file_bytes: int = MAX_FILE_BYTES
    cancel: object = None  # a threading.Event-like: set, the model pass stops after its current document
    on_searchable: Callable[[int], None] | None = None  # (documents) once the new documents' words are committed
    on_pass: Callable[[PassState], None] | None = None  # the model pass, document by document
    finish_keys: bool = True  # also read documents outside `roots` an earlier run left without keys
    on_owed: Callable[[int, int, bool], None] | None = None  # (documents, tokens, reading_now) an earlier run left

    def under_roots(self, path: str) -> bool:
        return any(Path(path).is_relative_to(r) for r in self.roots)

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


@dataclass
class ChangedFile:
    """A file that is new or whose bytes changed since the store last saw it."""

    path: Path
    sha256: str
    stat: os.stat_result


@dataclass
class NewDocument:
    """A changed file's text as the store will hold it."""

    entry: DocEntry
    tokens: np.ndarray  # [T] int32
    kind: str  # "added" or "updated": the IndexReport list it goes to


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
    run = IndexRun(_resolve_roots(paths), progress=progress, commit_every=commit_every,
                   max_file_bytes=max_file_bytes, cancel=cancel, on_searchable=on_searchable, on_pass=on_pass,
                   finish_keys=finish_keys, on_owed=on_owed)
    store = _open_for_indexing(engine, store_dir, dtype, wait)
    engine.use_key_layer(store.manifest.key_layer)
    try:
        store.mark_indexing(True)
        return _index(engine, store, run, t0)
    except Exception as exc:
        if out_of_room(exc):  # back to the last commit, said in one line
            raise disk_full_error(store, exc) from None
        raise
    finally:
        store.mark_indexing(False)
        store.release()


def _resolve_roots(paths: Iterable[str | Path]) -> tuple[Path, ...]:
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
    return tuple(roots)


def _open_for_indexing(engine: Engine, store_dir: Path, dtype: str, wait: bool) -> StoreWriter:
    info = engine.info
    try:
        return DocumentStore.open(
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


def _index(engine: Engine, store: StoreWriter, run: IndexRun, t0: float) -> IndexReport:
    report = IndexReport()
    changed, seen = _find_changes(store, run, report)
    store.fill_missing_passages(engine.piece)  # stores indexed before passages existed
    _remove_deleted(store, run, seen, report)
    documents = _read_documents(engine, store, changed, run, report)
    _add_words(engine, store, documents, run, report)
    pending = _keys_to_read(store, {d.entry.path for d in documents}, run, report)
    KeyPass(engine, store, run, report, pending).read_all()
    if pending and not run.cancelled():
        from ..grounding.retrieve import PassageRetriever  # grounding reads stores; a call, not a layer

        PassageRetriever(engine, store).warm_gate()  # the relevance gate's background, before any question
    engine.reset()
    report.seconds = time.perf_counter() - t0
    report.store_vectors = store.n_vectors
    report.store_bytes = store.disk_bytes()
    report.unkeyed = len(store.unkeyed())
    return report


# ---------------------------------------------------------------------- 1. what changed
def _find_changes(store: StoreWriter, run: IndexRun, report: IndexReport) -> tuple[list[ChangedFile], set[str]]:
    """The files under the run's roots that are new or changed, and every file seen there."""
    seen: set[str] = set()
    changed: list[ChangedFile] = []
    for path in iter_files(run.roots):
        seen.add(str(path))
        file = _changed(path, store, run, report)
        if file is not None:
            changed.append(file)
    return changed, seen


def _changed(path: Path, store: StoreWriter, run: IndexRun, report: IndexReport) -> ChangedFile | None:
    """The file if it is new or its bytes changed; else None, counted unchanged or skipped (with why)."""
    key = str(path)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the name (PEP 383 escapes): nothing can store it
        shown = key.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
        report.skipped[shown] = "file name is not valid UTF-8; rename the file to index it"
        return None
    try:
        st = path.stat()
    except OSError as exc:
        report.skipped[key] = f"unreadable ({exc.strerror or exc})"
        return None
    known = store.manifest.documents.get(key)
    if known and known.size == st.st_size and known.mtime == st.st_mtime:
        report.unchanged += 1
        return None
    if st.st_size > run.max_file_bytes:  # decided before any hashing or reading
        report.skipped[key] = f"too large ({st.st_size / 1e6:.0f} MB > {run.max_file_bytes / 1e6:.0f} MB limit)"
        return None
    try:
        sha = file_sha256(path)
    except OSError as exc:
        report.skipped[key] = f"unreadable ({exc.strerror or exc})"
        return None
    if known and known.sha256 == sha:  # touched, not changed
        known.mtime = st.st_mtime
        report.unchanged += 1
        return None
    return ChangedFile(path, sha, st)


def _remove_deleted(store: StoreWriter, run: IndexRun, seen: set[str], report: IndexReport) -> None:
    """Documents known under the run's roots whose files are gone."""
    for key in list(store.manifest.documents):
        if key not in seen and run.under_roots(key) and not Path(key).exists():
            store.remove_document(key)
            report.removed.append(key)


# ---------------------------------------------------------------------- 2. text and tokens
def _read_documents(engine: Engine, store: StoreWriter, changed: list[ChangedFile], run: IndexRun,
                    report: IndexReport) -> list[NewDocument]:
    """Every changed file extracted and tokenized first, so the model pass knows its total."""
    documents = []
    for file in changed:
        key = str(file.path)
        try:
            extracted = extract_text(file.path, run.max_file_bytes)
        except SkipFile as exc:
            report.skipped[key] = str(exc)
            continue
        tokens = np.asarray(engine.tokenize(extracted.text, add_special=True), dtype=np.int32)
        if len(tokens) < 2:
            report.skipped[key] = "too little text"
            continue
        entry = DocEntry(key, file.sha256, file.stat.st_mtime, file.stat.st_size, 0, 0, note=extracted.note)
        if extracted.pages:  # char offsets of pages -> token offsets (approximate by proportion)
            scale = len(tokens) / max(len(extracted.text), 1)
            entry.pages = [int(c * scale) for c in extracted.pages]
        documents.append(NewDocument(entry, tokens, "updated" if key in store.manifest.documents else "added"))
    return documents


# ---------------------------------------------------------------------- 3. words first
def _add_words(engine: Engine, store: StoreWriter, documents: list[NewDocument], run: IndexRun,
               report: IndexReport) -> None:
    """Every document's tokens and passages, committed every `commit_every` seconds and at the end.
    From here on grounded chat finds them (BM25) and lexical drafting copies from them, before the
    model has read them."""
    last_commit = time.perf_counter()
    for doc in documents:
        if doc.kind == "updated":
            store.remove_document(doc.entry.path)
        passages = split_passages(doc.tokens, engine.piece, breaks=doc.entry.pages)
        store.add_document(doc.entry, doc.tokens, None, passages)
        getattr(report, doc.kind).append(doc.entry.path)
        report.skipped.pop(doc.entry.path, None)
        if time.perf_counter() - last_commit > run.commit_every:
            store.commit()
            last_commit = time.perf_counter()
    store.manifest.skipped = dict(report.skipped)
    store.commit()
    if run.on_searchable is not None:
        run.on_searchable(len(documents))


# ---------------------------------------------------------------------- 4. keys
def _keys_to_read(store: StoreWriter, this_run: set[str], run: IndexRun, report: IndexReport) -> list[DocEntry]:
    """The documents the model pass reads: this run's, and those an interrupted run left (all of them,
    or with finish_keys False those under the run's roots); the rest are the report's `owed`."""
    pending, owed = [], []
    for d in store.unkeyed():
        asked = d.path in this_run or run.finish_keys or run.under_roots(d.path)
        (pending if asked else owed).append(d)
    earlier = [d for d in pending if d.path not in this_run]
    if run.on_owed is not None and (earlier or owed):
        run.on_owed(len(earlier) + len(owed), sum(d.n_tokens for d in earlier + owed), not owed)
    report.owed, report.owed_tokens = len(owed), sum(d.n_tokens for d in owed)
    return pending


class KeyPass:
    """The model's pass over documents searchable by words only: each one's key states stored, a commit
    every `commit_every` seconds (spaced out so commits, which rewrite the whole index, stay under
    ~10% of the time), and `progress` / `on_pass` told as it moves."""

    def __init__(self, engine: Engine, store: StoreWriter, run: IndexRun, report: IndexReport,
                 pending: list[DocEntry]):
        self.engine, self.store, self.run, self.report = engine, store, run, report
        self.pending = pending
        self.total = sum(d.n_tokens for d in pending)
        self.done = 0  # tokens of the documents read so far
        self.last_commit = time.perf_counter()
        self.commit_cost = 0.0  # seconds the latest commit took
        self.queued = [d.path for d in pending]
        self.read: set[str] = set()  # keys stored since the last commit
        self.saved: set[str] = set()  # read and committed

    def read_all(self) -> None:
        self._progress(0, "")
        self._tell()
        try:
            for entry in self.pending:
                if self.run.cancelled():
                    break
                self._read(entry)
                if time.perf_counter() - self.last_commit > max(self.run.commit_every, 10 * self.commit_cost):
                    self._commit()
        except KeyboardInterrupt:  # Ctrl+C: what was read is kept (a partly read document is read again next run)
            self.store.commit()
            raise
        self._commit()

    def _read(self, entry: DocEntry) -> None:
        started = time.perf_counter()
        self.queued.pop(0)
        self._tell(entry.path, 0, entry.n_tokens - 1)

        def window_done(n: int) -> None:
            self._progress(self.done + n, entry.path)
            self._tell(entry.path, n, entry.n_tokens - 1)

        keys = document_keys(self.engine, self.store.tokens(entry.start, entry.end), on_window=window_done)
        self.report.eval_seconds += time.perf_counter() - started
        self.store.add_keys(entry.path, keys)
        self.read.add(entry.path)
        self.done += entry.n_tokens
        self.report.tokens += entry.n_tokens
        self._progress(self.done, entry.path)
        self._tell()

    def _commit(self) -> None:
        started = time.perf_counter()
        self.store.commit()
        self.last_commit = time.perf_counter()
        self.commit_cost = self.last_commit - started
        self.saved.update(self.read)
        self.read.clear()
        self._tell()

    def _progress(self, done: int, path: str) -> None:
        if self.run.progress:
            self.run.progress(done, self.total, path)

    def _tell(self, reading: str = "", n: int = 0, of: int = 0) -> None:
        if self.run.on_pass is not None:
            self.run.on_pass(PassState(reading, n, of, frozenset(self.read), frozenset(self.saved), tuple(self.queued)))
