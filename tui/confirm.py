"""A yes/no confirmation asked before something that cannot be undone."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something that cannot be undone. Enter, `y` or the key that asked (`again`: pressing
    `d` twice deletes) say yes; Esc or `n` say no. Dismissed with True or False."""

    BINDINGS = [Binding("y,enter", "yes", "Yes"), Binding("n", "close", "No")]

    def __init__(self, question: str, again: str | None = None):
        super().__init__()
        self.question = question
        self.again = again
        self.hint = f"{again or 'y'} or Enter: yes · Esc or n: no"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Label(self.question, id="question")
            yield Label(self.hint, classes="hint")

    def on_key(self, event) -> None:
        if self.again and event.key == self.again:
            event.stop()
            self.dismiss(True)

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_close(self) -> None:  # Esc, through the app's cancel
        self.dismiss(False)
