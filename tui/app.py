"""The Textual chat app: it owns the model (loaded in a worker; F7 switches it), routes the keys and
the dialogs, and shows the chat screen (chat.py), which streams the replies."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from sense_local.conversation import ConversationConfig
from sense_local.errors import SenseError
from sense_local.sessions import SessionStore

from .chat import ChatScreen
from .messages import DocumentsChanged, EngineReady
from .settings import Settings


class SenseApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "sense-local"
    BINDINGS = [  # the tooltips are the help screen's (F1) longer words, and the footer's on hover
        Binding("escape", "cancel", "Cancel", tooltip="Close the dialog on top, else stop the reply", priority=True),
        # priority: the app's keys work whatever has focus (the prompt box would otherwise take them)
        Binding("f1", "help", "Help", tooltip="The keys, and what the colours mean", priority=True),
        Binding("f2", "toggle_highlight", "Highlight", tooltip="Highlighting of drafted text on or off", priority=True),
        Binding("f3", "documents", "Documents", tooltip="Add, list and remove the documents answers cite",
                priority=True),
        Binding("f4", "sessions", "Sessions", tooltip="Open, rename or delete a chat", priority=True),
        Binding("f5", "settings", "Settings", tooltip="Method, max tokens, temperature, system prompt, grounding",
                priority=True),
        Binding("f6", "model_info", "Model", tooltip="What the running model is", priority=True),
        Binding("f7", "pick_model", "Models", tooltip="Switch to another model", priority=True),
        Binding("f8", "copy_reply", "Copy", tooltip="Copy the last reply to the clipboard", priority=True),
        Binding("f9", "copy_code", "Copy code", tooltip="Copy the last reply's last code block", show=False,
                priority=True),
        Binding("ctrl+n", "new_session", "New chat", priority=True),
        Binding("ctrl+q", "quit", "Quit", tooltip="A reply under way is stopped and kept", priority=True),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, config: ConversationConfig | None = None, *, settings: Settings | None = None,
                 sessions: SessionStore | None = None):
        super().__init__()
        config = config or ConversationConfig()
        self.config = config.replace(system="")  # each session's settings carry its system prompt
        self.sessions = sessions or SessionStore()
        self.conversation = None  # sense_local.conversation.Conversation once the model is loaded
        self.store_path = self.config.store
        self.chat = ChatScreen(self.sessions, settings or Settings.from_config(config))

    @property
    def engine(self):
        return self.conversation.engine if self.conversation else None

    @property
    def store(self):
        return self.conversation.store if self.conversation else None

    @property
    def model_path(self) -> Path | None:
        return self.conversation.model_path if self.conversation else None

    # ------------------------------------------------------------------ screens and the model
    def get_default_screen(self) -> ChatScreen:
        return self.chat

    def on_mount(self) -> None:
        self.load_engine()

    def on_resize(self, event) -> None:
        self.chat.fit(event.size)  # the chat keeps the terminal's size under any dialog

    @work(thread=True, exclusive=True, group="engine")
    def load_engine(self, previous=None) -> None:
        """Load the model (and the store); `previous` is the conversation a model switch replaces: it
        is closed once the new one runs, or kept if the new one cannot be loaded."""
        from sense_local.conversation import Conversation

        config = self.config.replace(store=None)
        if previous is not None:
            previous.close_history()  # the same model's history: one writer, so the new conversation takes it
        try:
            conversation = Conversation.open(config)
        except SenseError as exc:
            if previous is not None:
                previous.open_history()
            self.conversation = previous
            self.post_message(EngineReady(str(exc)))
            return
        if previous is not None:
            previous.close()
        self.conversation = conversation
        if self.store_path:
            try:  # a store built with another model is refused: chat goes on without documents, and says why
                conversation.use_store(self.store_path)
            except SenseError as exc:
                self.post_message(EngineReady(store_error=str(exc)))
                return
        self.post_message(EngineReady())

    def on_engine_ready(self, message: EngineReady) -> None:
        if message.error:
            self.notify(message.error, title="Could not load the model", severity="error", timeout=30)
            if self.engine is None:
                self.chat.say(f"error: {message.error}")
            else:
                self.chat.update_status()
            return
        if message.store_error:
            self.notify(message.store_error, title="Documents not loaded", severity="warning", timeout=30)
        self.chat.model_ready()

    def switch_model(self, name: str | None) -> None:
        """Load another model in place of this one (the chat stays; the store is checked again)."""
        if not name:
            return
        self.config = self.config.replace(model=name)
        previous, self.conversation = self.conversation, None  # no message is sent to a model being swapped out
        self.chat.say(f"loading {name}…")
        self.load_engine(previous)

    def on_documents_changed(self, message: DocumentsChanged) -> None:
        """The documents screen indexed or removed documents: ground on its store from now on."""
        try:
            self.conversation.use_store(message.store_path)
            self.store_path = message.store_path
        except SenseError as exc:
            self.notify(str(exc), severity="error")
        self.chat.update_status()

    # ------------------------------------------------------------------ keys of the chat
    def action_new_session(self) -> None:
        self.chat.new_session()

    def action_toggle_highlight(self) -> None:
        self.chat.toggle_highlight()

    def action_copy_reply(self) -> None:
        self.chat.copy_reply()

    def action_copy_code(self) -> None:
        self.chat.copy_code()

    async def action_quit(self) -> None:
        """Quit at once when idle; during a reply, stop it first, keep the partial reply in the session
        marked stopped, then exit. A reply that does not stop within 2 s (a long prefill) is abandoned:
        the exit goes ahead and the worker thread is left to the process's end."""
        if not self.chat.generating:
            self.exit()
            return
        self.chat.stop(quit_after=True)
        self.set_timer(2.0, self.exit)

    def action_cancel(self) -> None:
        """Esc closes what is on top (a dialog, help, the documents screen), else stops the reply."""
        if len(self.screen_stack) > 1:  # a dialog that reports what it did closes through its callback
            close = getattr(self.screen, "action_close", None)
            close() if close is not None else self.pop_screen()
        elif self.chat.generating:
            self.chat.stop()

    def get_system_commands(self, screen):
        """The palette (Ctrl+P) offers the rarer actions too."""
        from textual.app import SystemCommand

        yield from super().get_system_commands(screen)
        yield SystemCommand("Copy last reply", "Put the last reply on the clipboard (F8)", self.action_copy_reply)
        yield SystemCommand("Copy last code block", "Put the last reply's last code block on the clipboard (F9)",
                            self.action_copy_code)
        yield SystemCommand("Help", "The keys and what the highlight colours mean (F1)", self.action_help)

    # ------------------------------------------------------------------ dialogs and other screens
    @property
    def dialog_open(self) -> bool:
        """A dialog is up: the F-keys do not stack another one on it."""
        from textual.screen import ModalScreen

        return isinstance(self.screen, ModalScreen)

    def action_help(self) -> None:
        from .dialogs import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.action_close()
        elif not self.dialog_open:
            self.push_screen(HelpScreen())

    def action_documents(self) -> None:
        from sense_local.paths import default_store

        from .documents import DocumentsScreen

        if not self.is_screen_installed("documents"):  # installed: it and its indexing outlive a pop
            self.install_screen(DocumentsScreen(self.store_path or str(default_store()), self.config.threads),
                                "documents")
        screen = self.get_screen("documents")
        screen.model_path = self.model_path  # the indexer loads the model the chat runs
        screen.fingerprint = self.engine.fingerprint if self.engine is not None else None
        if self.screen is not screen:
            self.push_screen("documents")

    def action_sessions(self) -> None:
        from .screens import SessionsScreen

        chat = self.chat
        if not self.dialog_open and not chat.generating:
            self.push_screen(SessionsScreen(self.sessions, chat.session.id if chat.session else None),
                             chat.on_sessions_closed)

    def action_settings(self) -> None:
        from .screens import SettingsScreen

        if not self.dialog_open:
            limit = self.engine.n_ctx if self.engine is not None else None
            self.push_screen(SettingsScreen(self.chat.settings, limit), self.chat.apply_settings)

    def action_model_info(self) -> None:
        from .screens import ModelInfoScreen

        if self.model_path and not self.dialog_open:
            self.push_screen(ModelInfoScreen(self.model_path))

    def action_pick_model(self) -> None:
        from .screens import ModelPickerScreen

        if self.dialog_open:
            return
        if self.chat.generating or self.engine is None:
            self.notify("Wait for the model to be idle before switching.", severity="warning")
            return
        self.push_screen(ModelPickerScreen(self.model_path), self.switch_model)


def run_app(config: ConversationConfig) -> int:
    app = SenseApp(config)
    app.run()
    if app.chat.generating:  # quit during a reply that did not stop in time (a long prefill): the terminal is
        sys.stdout.flush()  # restored and the session saved; waiting for the decode thread would hang
        os._exit(0)
    return 0
