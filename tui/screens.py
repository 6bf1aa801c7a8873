"""Screens around the chat: documents (indexing in a worker), sessions, settings, model info."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Header, Input, Label, ListItem, ListView, ProgressBar, Select, Static

from sense_local.errors import SenseError

from .settings import Settings


class IndexProgress(Message):
    def __init__(self, done: int, total: int, path: str, rate: float):
        super().__init__()
        self.done, self.total, self.path, self.rate = done, total, path, rate


class IndexPass(Message):
    """The model's pass moved on: a document begun, read, or committed (a datastore PassState)."""

    def __init__(self, state):
        super().__init__()
        self.state = state


class IndexSearchable(Message):
    """The new documents are committed with their words: grounded chat finds them before their keys."""

    def __init__(self, n_documents: int):
        super().__init__()
        self.n_documents = n_documents


class IndexFinished(Message):
    def __init__(self, summary: str, error: str | None = None):
        super().__init__()
        self.summary, self.error = summary, error


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


class DocumentsChanged(Message):
    """Documents were indexed into or removed from the store (it bubbles up to the app)."""

    def __init__(self, store_path: str):
        super().__init__()
        self.store_path = store_path


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
        from .dialogs import ConfirmScreen

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


@dataclass
class SessionsResult:
    """What the sessions dialog did, for the app to follow."""

    open: int | None = None  # a session to open
    new: bool = False  # start a new session
    deleted_current: bool = False  # the session on screen was deleted
    renamed_current: str = ""  # the session on screen has this new title


class SessionsScreen(ModalScreen):
    """List, open, rename, delete sessions. The list opens on the current session; rename and delete
    act on the highlighted one (the current one when none is), and delete asks first, naming it."""

    BINDINGS = [Binding("escape", "close", "Close"), Binding("n", "new", "New"), Binding("d", "delete", "Delete"),
                Binding("r", "rename", "Rename")]

    def __init__(self, sessions, current: int | None):
        super().__init__()
        self.sessions = sessions
        self.current = current
        self.result = SessionsResult()

    def compose(self) -> ComposeResult:
        items = self._items()
        ids = [item.session_id for item in items]
        with Vertical(classes="dialog sessions"):
            yield Label("Sessions (Enter open · n new · r rename · d delete)")
            yield ListView(*items, id="sessions", initial_index=ids.index(self.current) if self.current in ids else 0)
            yield Input(placeholder="new title, then Enter", id="rename")

    def on_mount(self) -> None:
        self.query_one("#rename").display = False

    def _items(self) -> list[ListItem]:
        """A row per session, newest first: the date and method, then the title, which gets the rest of
        the row (cut with an ellipsis only where the dialog ends)."""
        items = []
        for s in self.sessions.list():
            mark = "● " if s.id == self.current else "  "
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
            item = ListItem(Label(f"{mark}{when}  [{s.method}]  {s.title}", classes="row"))
            item.session_id = s.id
            items.append(item)
        return items

    async def refresh_list(self, keep: int | None = None) -> None:
        """List the sessions again, highlighting session `keep` (else the row where the highlight was)."""
        view = self.query_one(ListView)
        row = view.index or 0
        await view.clear()
        items = self._items()
        await view.extend(items)
        ids = [item.session_id for item in items]
        view.index = ids.index(keep) if keep in ids else min(row, len(ids) - 1) if ids else None

    def _selected(self) -> int | None:
        """The highlighted session, else the current one."""
        item = self.query_one(ListView).highlighted_child
        return getattr(item, "session_id", None) or self.current

    def action_close(self) -> None:
        self.dismiss(self.result)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.result.open = event.item.session_id
        self.dismiss(self.result)

    def action_new(self) -> None:
        self.result.new = True
        self.dismiss(self.result)

    def action_delete(self) -> None:
        """Ask, naming the highlighted session; `d` again (or Enter, y) deletes it."""
        from .dialogs import ConfirmScreen

        sid = self._selected()
        session = self.sessions.get(sid) if sid is not None else None
        if session is None:
            return
        current = " (the chat on screen)" if sid == self.current else ""
        self.app.push_screen(ConfirmScreen(f"Delete \u201c{session.title}\u201d{current}?", again="d"),
                             lambda yes: self._delete(session) if yes else None)

    async def _delete(self, session) -> None:
        self.sessions.delete(session.id)
        if session.id == self.current:
            self.result.deleted_current, self.current = True, None
        self.notify(f"deleted \u201c{session.title}\u201d")
        await self.refresh_list()

    def action_rename(self) -> None:
        if self._selected() is None:
            return
        box = self.query_one("#rename", Input)
        box.display = True
        box.focus()

    @on(Input.Submitted, "#rename")
    async def do_rename(self, event: Input.Submitted) -> None:
        sid, title = self._selected(), event.value.strip()
        if sid is not None and title:
            self.sessions.rename(sid, title)
            if sid == self.current:
                self.result.renamed_current = title
        event.input.display = False
        event.input.value = ""
        await self.refresh_list(keep=sid)  # the renamed session stays highlighted
        self.query_one(ListView).focus()  # keys are the dialog's again (d, r, n), not the box's


class SettingsScreen(ModalScreen):
    """Edit the session's settings; Save (or Enter in a field) hands them to the app."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, settings, context: int | None = None):
        super().__init__()
        self.settings = settings
        self.context = context  # the running model's context: no reply can be longer

    def compose(self) -> ComposeResult:
        from sense_local.speculative.methods import METHODS

        s = self.settings
        with VerticalScroll(classes="dialog settings"):  # a short terminal scrolls it (Tab follows focus)
            yield Label("Method")
            yield Select([(m, m) for m in METHODS], value=s.method, allow_blank=False, id="method")
            yield Label("Theta (sense-soft; empty = default)")
            yield Input("" if s.theta is None else str(s.theta), id="theta")
            yield Label("Max tokens")
            yield Input(str(s.max_tokens), id="max_tokens")
            yield Label("Temperature")
            yield Input(str(s.temperature), id="temperature")
            yield Label("System prompt")
            yield Input(s.system, id="system")
            yield Checkbox("Ground answers in my documents (cite sources)", s.grounded, id="grounded")
            yield Button("Save", id="save", variant="primary")

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def save(self) -> None:
        try:
            theta_text = self.query_one("#theta", Input).value.strip()
            settings = Settings(
                method=str(self.query_one("#method", Select).value),
                theta=self._number("#theta", "Theta", float) if theta_text else None,
                max_tokens=self._number("#max_tokens", "Max tokens", int),
                temperature=self._number("#temperature", "Temperature", float),
                system=self.query_one("#system", Input).value,
                grounded=self.query_one("#grounded", Checkbox).value,
            )
            settings.check(self.context)
        except SenseError as exc:
            self.notify(str(exc).replace("--", ""), severity="error")
            return
        self.dismiss(settings)

    def _number(self, field: str, label: str, kind: type):
        text = self.query_one(field, Input).value.strip()
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise SenseError(f"{label}: '{text}' is not {what}") from None


class ModelInfoScreen(ModalScreen):
    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        from sense_local.model_info import read_model_info

        info = read_model_info(self.path).to_dict()
        template = info.pop("chat_template")
        lines = [f"{k:>12}: {v}" for k, v in info.items()]
        lines.append(f"{'template':>12}: {'yes' if template else 'none (ChatML fallback)'}")
        with Vertical(classes="dialog"):
            yield Label("Model")
            yield Static("\n".join(lines))


class ModelPickerScreen(ModalScreen):
    """Registry models that are present and the GGUF files other tools keep: Enter switches to one."""

    BINDINGS = [Binding("escape", "dismiss", "Close")]

    def __init__(self, current: Path | None):
        super().__init__()
        self.current = current  # the model the chat runs (marked in the list)

    def compose(self) -> ComposeResult:
        items, here = self._items()
        with Vertical(classes="dialog models"):
            yield Label("Models · Enter switches · Esc closes")
            yield Static("Documents indexed with another model stay unloaded until you switch back.", classes="hint")
            yield ListView(*items, id="models", initial_index=here)

    def _items(self) -> tuple[list[ListItem], int]:
        """A row per model (registry models present, then GGUF files found on disk), and the row of the
        model the chat runs."""
        from sense_local.model_discovery import discover
        from sense_local.registry import load_registry

        registry = load_registry()
        choices = [(e.name, e.path, "registry") for e in registry.entries.values() if e.present and e.kind == "chat"]
        choices += [(f.name, f.path, f.tool) for f in discover()]
        items, here = [], 0
        for name, path, source in choices:
            size = path.stat().st_size / 2**30 if path.exists() else 0
            running = self.current is not None and path == self.current
            here = len(items) if running else here
            mark = "● " if running else "  "
            item = ListItem(Label(f"{mark}{name}  [{source}, {size:.2f} GiB]", classes="row"))
            item.model_name, item.model_path = name, path
            items.append(item)
        return items, here

    def on_mount(self) -> None:
        self.query_one(ListView).focus()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.dismiss(event.item.model_name)
