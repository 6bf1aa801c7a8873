"""The documents screen (F3): add a folder or file (indexed in a worker with its own engine, so the
chat stays usable), follow the model pass per document, remove a document."""
from __future__ import annotations

import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, ProgressBar, Static

from sense_local.errors import SenseError

from .messages import DocumentsChanged, IndexFinished, IndexPass, IndexProgress, IndexSearchable


class RateEstimate:
    """The one estimate of indexing speed: tokens per second over the recent reports (an EMA of the
    rate between reports), and the time left counting down between them."""

    def __init__(self, smoothing: float = 0.3):
        self.smoothing = smoothing
        self.rate = 0.0
        self._last: tuple[float, int] | None = None  # (when, done) of the latest report
        self._total = 0

    def update(self, done: int, total: int, average: float = 0.0) -> None:
        """A progress report; `average` (the run's overall rate so far) seeds the estimate."""
        now = time.monotonic()
        if self.rate == 0 and average > 0:
            self.rate = average
        if self._last is not None and now > self._last[0] and done >= self._last[1]:
            recent = (done - self._last[1]) / (now - self._last[0])
            self.rate = recent if self.rate == 0 else self.rate + self.smoothing * (recent - self.rate)
        if self._last is None or done != self._last[1]:
            self._last = (now, done)
        self._total = total

    def eta(self) -> float | None:
        """Seconds left, or None before the speed is known."""
        if self._last is None or self.rate <= 0:
            return None
        since = time.monotonic() - self._last[0]
        return max((self._total - self._last[1]) / self.rate - since, 0.0)


class DocumentsScreen(Screen):
    """Add a folder (indexed in a worker with its own engine; chat stays usable), list, remove."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("delete", "remove", "Remove document")]

    def __init__(self, store_path: str, threads: int | None):
        super().__init__()
        self._store_path = store_path
        self.threads = threads
        self.model_path = None  # the chat's model, set by the app before the screen is shown
        self.fingerprint: str | None = None  # the loaded model's fingerprint, set with model_path
        self._rate = RateEstimate()
        self._current: tuple[int, int, str] | None = None  # (done, total, path) of the indexing under way
        self._pass = None  # the model pass's latest PassState while one runs
        self._docs: dict[str, tuple[bool, str]] = {}  # document -> (keyed as committed, its note), as listed
        self._status_column = None
        self._ticker = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="folder-row"):
            yield Input(placeholder="folder or file to index", id="folder")
            yield Button("Add", id="add", variant="primary")
        yield ProgressBar(id="index-progress", show_eta=False)  # one ETA: ours, in the status line
        yield Static("", id="index-status")
        yield DataTable(id="docs-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        self._status_column = table.add_columns("document", "tokens", "status")[-1]
        self.query_one(ProgressBar).display = False  # shown while indexing
        self.refresh_table()

    def on_screen_resume(self) -> None:
        self.refresh_table()  # the model may have changed since the screen was last shown

    def store_path(self) -> str:
        return self._store_path

    def refresh_table(self) -> None:
        from sense_local.datastore.manifest import Manifest, StoreError

        table = self.query_one(DataTable)
        table.clear()
        self._docs = {}
        try:
            manifest = Manifest.load(Path(self.store_path()))
        except StoreError:
            return
        other = self.fingerprint is not None and manifest.model_fingerprint != self.fingerprint
        if other and self._current is None:  # a store of another model: nothing in it serves this one
            self.query_one("#index-status", Static).update(
                f"These documents were indexed with {manifest.model_name}, not the loaded model: answers do not "
                "use them. Switch back to it (F7) to use them.")
        for path, doc in sorted(manifest.documents.items()):
            if other:
                state = f"not indexed for this model (indexed with {manifest.model_name})"
                state += f" ({doc.note})" if doc.note else ""
            else:
                self._docs[path] = (doc.keyed, doc.note)
                state = self._state(path)
            table.add_row(path, str(doc.n_tokens), state, key=path)
        for path, reason in sorted(manifest.skipped.items()):
            table.add_row(path, "-", f"skipped: {reason}", key="skip:" + path)

    def _state(self, path: str) -> str:
        """A document's status cell: its state (the datastore says how to word it) and its note."""
        from sense_local.datastore import document_state

        keyed, note = self._docs[path]
        return document_state(path, keyed, self._pass) + (f" ({note})" if note else "")

    def on_index_pass(self, message: IndexPass) -> None:
        """The per-document states move with the model pass; the rest of the table stays as loaded."""
        self._pass = message.state
        table = self.query_one(DataTable)
        for path in self._docs:
            state = self._state(path)
            if table.get_cell(path, self._status_column) != state:
                table.update_cell(path, self._status_column, state)

    @on(Button.Pressed, "#add")
    @on(Input.Submitted, "#folder")
    def add_folder(self) -> None:
        folder = self.query_one("#folder", Input).value.strip()
        if not folder:
            return
        if not Path(folder).expanduser().exists():
            self.notify(f"{folder}: no such file or folder", severity="error")
            return
        self.query_one("#index-status", Static).update(f"indexing {folder}…")
        self.query_one("#folder", Input).value = ""  # the next folder can be typed at once
        self.run_index(str(Path(folder).expanduser()))

    @work(thread=True, exclusive=True, group="index")
    def run_index(self, folder: str) -> None:
        from sense_local.datastore import index_paths
        from sense_local.engine import Engine

        try:
            engine = Engine(self.model_path, n_ctx=2048, n_threads=self.threads)
        except SenseError as exc:
            self.post_message(IndexFinished("", str(exc)))
            return
        t0 = time.perf_counter()
        last = [0.0]

        def progress(done: int, total: int, path: str) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.2 or done == total:
                last[0] = now
                self.post_message(IndexProgress(done, total, path, done / max(now - t0, 1e-6)))

        try:
            report = index_paths(engine, self.store_path(), [folder], progress=progress,
                                 on_searchable=lambda n: self.post_message(IndexSearchable(n)),
                                 on_pass=lambda state: self.post_message(IndexPass(state)))
        except SenseError as exc:
            self.post_message(IndexFinished("", str(exc)))
            return
        finally:
            engine.close()
        self.post_message(IndexFinished(
            f"{len(report.added)} added, {len(report.updated)} changed, {len(report.removed)} removed, "
            f"{report.unchanged} unchanged, {len(report.skipped)} skipped · {report.tok_per_s:.0f} tok/s"))

    def on_index_searchable(self, message: IndexSearchable) -> None:
        self.post_message(DocumentsChanged(self.store_path()))  # the chat reopens the store: words work now
        self.refresh_table()

    def on_index_progress(self, message: IndexProgress) -> None:
        bar = self.query_one(ProgressBar)
        bar.display = True
        bar.update(total=max(message.total, 1), progress=message.done)
        self._rate.update(message.done, message.total, message.rate)
        self._current = (message.done, message.total, message.path)
        if self._ticker is None:  # the status line moves every second, also between progress reports
            self._ticker = self.set_interval(1.0, self._show_progress)
        self._show_progress()

    def _show_progress(self) -> None:
        if self._current is None:
            return
        done, total, path = self._current
        eta = self._rate.eta()
        left = "ETA …" if eta is None else f"ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.query_one("#index-status", Static).update(
            f"searchable by words · model pass {done}/{total} tokens ({100 * done / max(total, 1):.0f}%) · "
            f"{self._rate.rate:.0f} tok/s · {left} · {Path(path).name}")

    def on_index_finished(self, message: IndexFinished) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker, self._current, self._pass = None, None, None
        status = self.query_one("#index-status", Static)
        if message.error:
            status.update(f"error: {message.error}")
            self.notify(message.error, severity="error")
            return
        status.update(f"done: {message.summary}")
        self.post_message(DocumentsChanged(self.store_path()))
        self.refresh_table()

    def action_remove(self) -> None:
        """Asks first, naming the highlighted document; Del again (or Enter, y) removes it."""
        from .confirm import ConfirmScreen

        table = self.query_one(DataTable)
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        if key.startswith("skip:"):
            return
        question = f"Remove \u201c{Path(key).name}\u201d from the documents? ({key})"
        self.app.push_screen(ConfirmScreen(question, again="delete"),
                             lambda yes: self.remove_document(key) if yes else None)

    def remove_document(self, key: str) -> None:
        from sense_local.datastore import DocumentStore

        try:
            store = DocumentStore.open(self.store_path(), writable=True)
            try:
                store.remove_document(key)
                store.commit()
            finally:
                store.release()
        except SenseError as exc:
            self.notify(str(exc), severity="error")
            return
        self.post_message(DocumentsChanged(self.store_path()))
        self.refresh_table()
        self.notify(f"removed {Path(key).name}")
