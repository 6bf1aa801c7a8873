"""Dialogs around the chat: sessions (F4), settings (F5), model info (F6), the model picker (F7).
Each hands its result back through `dismiss`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, ListItem, ListView, Select, Static

from sense_local.errors import SenseError

from .settings import Settings


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
        from .confirm import ConfirmScreen

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
