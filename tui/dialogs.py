"""The F1 help screen, built from the bindings themselves."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from .widgets import LEGEND_LABELS, SOURCE_STYLES, PromptBox


# What each highlight colour means: the legend's labels (widgets.LEGEND_LABELS) explained.
COLOUR_MEANINGS = {
    "context": "copied from earlier in this conversation (your messages and the replies)",
    "docs": "found in your indexed documents (F3)",
    "pld": "looked up in the prompt itself",
    "history": "found in the model's earlier replies to you, in other conversations (sense-local history)",
    "soft": "a draft the soft rule took as close enough (sense-soft), though the model ranked another token first",
}


def key_rows(app, bindings) -> list[tuple[str, str]]:
    """(key as shown in the footer, what it does) for each binding with a description (and its tooltip)."""
    rows, seen = [], set()
    for binding in bindings:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        for key in binding.key.split(","):
            one = Binding(key.strip(), binding.action, binding.description)
            shown = app.get_key_display(one)
            what = binding.description + (f": {binding.tooltip}" if binding.tooltip else "")
            if (shown, what) not in seen:
                seen.add((shown, what))
                rows.append((shown, what))
    return rows


def help_text(app) -> Table:
    """The keys of the chat, its message box and its dialogs, read from their BINDINGS (and the box's
    key tuples), then the highlight colours: nothing here is typed twice."""
    from .documents import DocumentsScreen
    from .screens import SessionsScreen

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()

    def section(title: str, rows) -> None:
        table.add_row(Text(title, style="bold underline"), "")
        for key, what in rows:
            table.add_row(key, what)
        table.add_row("", "")

    box = [(" / ".join(app.get_key_display(Binding(k, "", "")) for k in keys), what)
           for keys, what in ((PromptBox.SEND_KEYS, "Send the message"), (PromptBox.NEWLINE_KEYS, "New line"))]
    palette = [(app.get_key_display(Binding(app.COMMAND_PALETTE_BINDING, "", "")), "Command palette")]
    section("Chat", key_rows(app, type(app).BINDINGS) + palette)
    section("Message box", box)
    section("Sessions (F4)", [("enter", "Open")] + key_rows(app, SessionsScreen.BINDINGS))
    section("Documents (F3)", key_rows(app, DocumentsScreen.BINDINGS))
    table.add_row(Text("Highlight colours", style="bold underline"),
                  "text the model accepted from a draft, by where the draft came from:")
    for source, label in LEGEND_LABELS.items():
        table.add_row(Text(f" {label} ", style=SOURCE_STYLES[source]), COLOUR_MEANINGS[source])
    table.add_row("plain", "the model's own tokens, not drafted (F2 turns highlighting off)")
    return table


class HelpScreen(ModalScreen):
    """F1: the keys and the colours. Esc (or F1 again) closes it."""

    BINDINGS = [Binding("escape,f1", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Label("Help · Esc closes")
            with VerticalScroll():
                yield Static(help_text(self.app), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
