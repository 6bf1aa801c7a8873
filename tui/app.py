"""The Textual chat app: streaming replies with accepted-draft highlighting, sessions, documents."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Header, Static

from sense_local.conversation import ConversationConfig, Finished, Prepared
from sense_local.errors import SenseError
from sense_local.sessions import Message as StoredMessage
from sense_local.sessions import SessionStore

from .footer import ChatFooter
from .settings import Settings
from .widgets import ChatMessage, PromptBox, StatusBar, Transcript, code_blocks, legend_text

WELCOME = ("Type a message and press Enter (Ctrl+J for a new line). F3 adds your documents, so answers can "
           "cite them; F5 settings, F7 other models, F4 sessions, F1 help, Ctrl+Q quits.")

# Tokens reach the UI in batches, at most this often: each batch re-renders the reply, and on a
# 2-core CPU that work is taken from decoding (measured: 20/s cost ~10% of tok/s, 5/s ~0%).
FRAME = 1 / 8
STATUS_EVERY = 0.5  # seconds between live status-bar updates
TITLE_MAX = 200  # characters of the first message kept as a session's title (the lists cut it to their width)


class TokensBatch(Message):
    def __init__(self, spans: list, stats: dict):
        super().__init__()
        self.spans = spans
        self.stats = stats


class GenerationDone(Message):
    def __init__(self, finished: Finished | None, error: str | None = None):
        super().__init__()
        self.finished = finished
        self.error = error


class Reading(Message):
    """A long prompt being read: `done` of its `total` tokens evaluated (or reused) at time `t`."""

    def __init__(self, done: int, total: int, t: float):
        super().__init__()
        self.done, self.total, self.t = done, total, t


class Grounded(Message):
    """The passages a reply is grounded on (sent before its first token), and notes for the user."""

    def __init__(self, sources: list[dict], notes: list[str]):
        super().__init__()
        self.sources = sources
        self.notes = notes


class EngineReady(Message):
    def __init__(self, error: str | None = None, store_error: str | None = None):
        super().__init__()
        self.error = error  # no model: nothing works
        self.store_error = store_error  # the model runs, the documents could not be opened


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
        self.settings = settings or Settings.from_config(config)
        self.config = config.replace(system="")  # each session's settings carry its system prompt
        self.sessions = sessions or SessionStore()
        self.conversation = None  # sense_local.conversation.Conversation once the model is loaded
        self.store_path = self.config.store
        self.session = None
        self.highlight = True
        self.generating = False
        self._cancel = threading.Event()
        self._reply: ChatMessage | None = None
        self._streamed = 0  # tokens of the reply in progress shown so far
        self._decode_from = (0.0, 0)  # (time, tokens shown) at the reply's first token
        self._status_at = 0.0  # when the status bar last showed live figures
        self.last_stats: dict = {}
        self._quitting = False  # quit asked during a reply: exit once the reply is stopped and saved
        self._reading_from: tuple[int, float] | None = None  # (tokens read, time) at the first progress of a prompt
        self.queued: list[str] = []  # messages sent during a reply: each goes once the one before has its answer

    @property
    def engine(self):
        return self.conversation.engine if self.conversation else None

    @property
    def store(self):
        return self.conversation.store if self.conversation else None

    @property
    def model_path(self) -> Path | None:
        return self.conversation.model_path if self.conversation else None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield Static(legend_text(), id="legend")
        yield PromptBox(id="prompt", soft_wrap=True, show_line_numbers=False)
        yield StatusBar("loading model…", id="status")
        yield ChatFooter()

    def on_mount(self) -> None:
        self.screen.add_class("chat")
        self.query_one("#prompt", PromptBox).focus()
        self.on_resize(events.Resize(self.size, self.size))
        self.load_engine()

    NARROW = 90  # columns below which the legend and the footer go compact
    SHORT = 20  # rows below which the legend hides and the prompt box shrinks

    def on_resize(self, event) -> None:
        """Degrade on small terminals: compact legend and footer, a shorter prompt box, no legend
        under SHORT rows; the status bar abbreviates itself."""
        from textual.css.query import NoMatches

        width, height = event.size.width, event.size.height
        if not self.screen_stack:
            return
        chat = self.screen_stack[0]
        chat.set_class(width < self.NARROW, "-narrow")
        chat.set_class(height < self.SHORT, "-short")
        try:
            chat.query_one("#legend", Static).update(legend_text(compact=width < self.NARROW))
            chat.query_one(Footer).compact = width < self.NARROW
        except NoMatches:  # not composed yet: on_mount applies the same
            pass

    def on_key(self, event) -> None:
        """Typing while the transcript (or anything that takes no text) has focus goes to the prompt
        box, and Enter there sends: no keystroke is lost to focus."""
        from textual.widgets import Input, TextArea

        if self.screen is not self.screen_stack[0] or isinstance(self.focused, (Input, TextArea)):
            return
        box = self.query_one("#prompt", PromptBox)
        if event.is_printable and event.character:
            box.focus()
            box.insert(event.character)
            event.stop()
        elif event.key == "enter" and box.text.strip():
            box.focus()
            box.action_submit()
            event.stop()

    @work(thread=True, exclusive=True, group="engine")
    def load_engine(self, previous=None) -> None:
        """Load the model (and the store); `previous` is the conversation a model switch replaces: it
        is closed once the new one runs, or kept if the new one cannot be loaded."""
        from sense_local.conversation import Conversation

        config = self.config.replace(store=None)
        try:
            conversation = Conversation.open(config)
        except SenseError as exc:
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
                self.query_one(StatusBar).update(f"error: {message.error}")
            else:
                self.update_status()
            return
        if message.store_error:
            self.notify(message.store_error, title="Documents not loaded", severity="warning", timeout=30)
        if self.session is not None:  # a model switch: the conversation goes on
            self.update_status()
            return
        sessions = self.sessions.list()
        if sessions:
            self.open_session(sessions[0].id)
        else:
            self.action_new_session()
        self.update_status()

    # ------------------------------------------------------------------ sessions
    def open_session(self, session_id: int) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        self.session = session
        self.settings = Settings.from_dict(session.settings)
        transcript = self.query_one("#transcript", Transcript)
        transcript.remove_children()
        for m in self.sessions.messages(session_id):
            widget = ChatMessage(m.role, m.content, m.spans, m.stats.get("sources"))
            widget.highlight = self.highlight
            transcript.mount(widget)
            if m.stats.get("footer"):
                widget.footer = m.stats["footer"]
        if not transcript.children:
            transcript.mount(Static(WELCOME, classes="welcome"))
        transcript.scroll_end(animate=False)
        self.sub_title = session.title
        self.last_stats = {}  # figures belong to the session they came from
        self.update_status()

    def action_new_session(self) -> None:
        if self.generating:
            return
        name = self.model_path.name if self.model_path else "model"
        self.session = self.sessions.create(time.strftime("Chat %Y-%m-%d %H:%M"), name, self.settings.method,
                                            self.settings.to_dict())
        transcript = self.query_one("#transcript", Transcript)
        transcript.remove_children()
        transcript.mount(Static(WELCOME, classes="welcome"))
        self.sub_title = self.session.title
        self.last_stats = {}
        self.update_status()

    # ------------------------------------------------------------------ chatting
    def on_prompt_box_submitted(self, message: PromptBox.Submitted) -> None:
        if self.engine is None or self.session is None:
            self.notify("The model is still loading.", severity="warning")
            return
        if self.generating:  # kept, not thrown away: it is sent when this reply ends (Esc ends it now)
            self.queued.append(message.text)
            waiting = f" ({len(self.queued)} waiting)" if len(self.queued) > 1 else ""
            self.notify(f"Queued{waiting}: sent when this reply ends (Esc stops it).")
            return
        self.send(message.text)

    def send(self, text: str) -> None:
        transcript = self.query_one("#transcript", Transcript)
        for welcome in transcript.query(".welcome"):
            welcome.remove()
        transcript.mount(ChatMessage("user", text))
        self.sessions.add_message(self.session.id, StoredMessage("user", text))
        if self.session.title.startswith("Chat ") and len(self.sessions.messages(self.session.id)) == 1:
            self.session.title = " ".join(text.split())[:TITLE_MAX]
            self.sessions.rename(self.session.id, self.session.title)
            self.sub_title = self.session.title
        self._reply = ChatMessage("assistant")
        self._reply.highlight = self.highlight
        transcript.mount(self._reply)
        transcript.scroll_end(animate=False)
        self.generating = True
        self._reading_from = None
        self._cancel.clear()
        self._streamed = 0
        self.generate(self.history())

    def history(self) -> list[dict]:
        messages = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        for m in self.sessions.messages(self.session.id):
            messages.append({"role": m.role, "content": m.content})
        return messages

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, messages: list[dict]) -> None:
        s = self.settings
        conversation = self.conversation
        batch: list = []
        last_post = time.perf_counter()
        try:
            options = s.options()
            def reading(done: int, total: int) -> None:
                self.post_message(Reading(done, total, time.perf_counter()))

            for ev in conversation.reply(messages, options=options, grounded=s.grounded, cancel=self._cancel,
                                         progress=reading):
                if isinstance(ev, Prepared):
                    self.post_message(Grounded([x.to_dict() for x in ev.sources], ev.notes))
                elif isinstance(ev, Finished):
                    if batch:
                        self.post_message(TokensBatch(batch, self._live_stats(ev.stats, time.perf_counter())))
                    self.post_message(GenerationDone(ev))
                else:
                    batch.append((ev.text, ev.source, ev.soft))
                    now = time.perf_counter()
                    if now - last_post >= FRAME:
                        self.post_message(TokensBatch(batch, self._live_stats(conversation.stats, now)))
                        batch, last_post = [], now
        except SenseError as exc:
            self.post_message(GenerationDone(None, str(exc)))
        except Exception as exc:  # a bug or a failed decode: said in the app, the chat goes on
            self.post_message(GenerationDone(None, f"internal error: {type(exc).__name__}: {exc}"))

    @staticmethod
    def _live_stats(stats, now: float) -> dict:
        return {"forwards": stats.forwards, "accepted": stats.accepted, "drafted": stats.drafted, "t": now}

    def on_grounded(self, message: Grounded) -> None:
        for note in message.notes:
            self.notify(note, title="Documents", timeout=8)
        if self._reply is not None and message.sources:
            self._reply.set_sources(message.sources)  # the transcript follows it if it shows its end

    def on_reading(self, message: Reading) -> None:
        """The reply's bar says how far the prompt has been read, and how long the rest should take
        at the pace so far (a pasted document can take a minute on a CPU)."""
        if self._reply is None or self._streamed:
            return
        first = self._reading_from = self._reading_from or (message.done, message.t)
        line = f"reading the prompt: {message.done:,} / {message.total:,} tokens"
        if message.t > first[1] and message.done > first[0]:
            rate = (message.done - first[0]) / (message.t - first[1])
            line += f", about {max(message.total - message.done, 0) / rate:.0f} s left"
        self._reply.set_footer(line)

    def on_tokens_batch(self, message: TokensBatch) -> None:
        if self._reply is None:
            return
        if self._reading_from is not None:  # the prompt is read: its progress line goes
            self._reading_from = None
            self._reply.set_footer("")
        self._reply.append_spans(message.spans)
        st = message.stats
        if not self._streamed:  # the decoding rate counts from the first token, as GenerationStats.tok_per_s
            self._decode_from = (st["t"], len(message.spans))
        self._streamed += len(message.spans)
        if st["t"] - self._status_at < STATUS_EVERY:
            return
        self._status_at = st["t"]
        t0, n0 = self._decode_from
        self.update_status(
            tok_per_s=f"{(self._streamed - n0) / (st['t'] - t0):.1f}" if st["t"] > t0 and self._streamed > n0 else None,
            tau=f"{self._streamed / max(st['forwards'], 1):.2f}",
            accepted=f"{st['accepted']}/{st['drafted']}",
        )

    def on_generation_done(self, message: GenerationDone) -> None:
        self.generating = False
        reply, self._reply = self._reply, None
        if message.error:
            self.notify(message.error, severity="error", timeout=15)
            if reply is not None:
                reply.remove()
            if self._quitting:
                self.exit()
            elif self.queued:  # not sent after a failure: back in the box, nothing lost
                self.query_one(PromptBox).text = "\n\n".join(self.queued)
                self.queued.clear()
            return
        finished = message.finished
        if finished.finish_reason == "cancelled" and finished.stats.tokens == 0 and not self._quitting:
            self._unask(reply)
            return
        self.last_stats = st = finished.stats.to_dict()
        footer = finished.summary()
        if reply is not None:
            reply.set_footer(footer)  # with a "stopped" mark: the transcript keeps it in view
            spans = [list(s) for s in reply.spans]
            self.sessions.add_message(self.session.id, StoredMessage("assistant", reply.content, spans,
                                                                     {**st, "footer": footer, "sources": reply.sources}))
        self.update_status()
        if self._quitting:
            self.exit()
        elif self.queued:
            self.send(self.queued.pop(0))

    def _unask(self, reply) -> None:
        """A question stopped before its reply began (Esc while a long prompt was read) leaves the
        conversation, so later turns do not read it again; its text comes back to the box."""
        if reply is not None:
            reply.remove()
        asked = [m for m in self.query(ChatMessage) if m.role == "user"]
        text = asked[-1].content if asked else ""
        if asked:
            asked[-1].remove()
        self.sessions.drop_last_message(self.session.id)
        box = self.query_one(PromptBox)
        box.text = text + (("\n\n" + box.text) if box.text.strip() else "")
        box.move_cursor((len(text.split("\n")) - 1, len(text.split("\n")[-1])))  # at the end of the question
        self.notify("Stopped before the reply began: the message is back in the box, out of the conversation.")
        self.update_status()
        if self.queued:
            self.send(self.queued.pop(0))

    async def action_quit(self) -> None:
        """Quit at once when idle; during a reply, stop it first (the decoder checks between decodes),
        keep the partial reply in the session marked stopped, then exit. A reply that does not stop
        within 2 s (a long prefill) is abandoned: the exit goes ahead and the worker thread is
        left to the process's end."""
        if not self.generating:
            self.exit()
            return
        self._quitting = True
        self._cancel.set()
        self.set_timer(2.0, self.exit)

    def action_cancel(self) -> None:
        """Esc closes what is on top (a dialog, help, the documents screen), else stops the reply."""
        if len(self.screen_stack) > 1:  # a dialog that reports what it did closes through its callback
            close = getattr(self.screen, "action_close", None)
            close() if close is not None else self.pop_screen()
        elif self.generating:
            self._cancel.set()

    # ------------------------------------------------------------------ display
    def action_toggle_highlight(self) -> None:
        self.highlight = not self.highlight
        for widget in self.query(ChatMessage):
            widget.highlight = self.highlight
        self.query_one("#legend").display = self.highlight

    def update_status(self, **live) -> None:
        st = self.last_stats
        fields = {
            "tok/s": live.get("tok_per_s", f"{st['tok_per_s']:.1f}" if st and st["tokens"] > 1 else None),
            "tau": live.get("tau", f"{st['tau']:.2f}" if st else None),
            "accepted": live.get("accepted", f"{st['accepted']}/{st['drafted']}" if st else None),
            "method": self.settings.method,
            "model": self.model_path.name if self.model_path else None,
            **self.docs_field(),
        }
        self.query_one(StatusBar).show(**fields)

    def docs_field(self) -> dict:
        """The status bar's word on the documents, true for the loaded model: the store's name when it
        is in use, else why there are none."""
        from sense_local.datastore.manifest import Manifest, StoreError

        if self.store is not None:
            return {"store": Path(self.store_path).name}
        if not self.store_path or self.engine is None:
            return {"store": "none"}
        try:
            manifest = Manifest.load(Path(self.store_path))
        except StoreError:
            return {"docs": "not loaded"}
        if manifest.model_fingerprint != self.engine.fingerprint:
            return {"docs": "not indexed for this model"}
        return {"docs": "not loaded"}

    # ------------------------------------------------------------------ copy and help
    def last_reply(self) -> ChatMessage | None:
        """The newest assistant reply with text (the one streaming, if any)."""
        done = [m for m in self.screen_stack[0].query(ChatMessage) if m.role == "assistant" and m.content.strip()]
        return done[-1] if done else None

    def action_copy_reply(self) -> None:
        """The last reply to the clipboard (OSC 52: the terminal puts it on the system clipboard)."""
        reply = self.last_reply()
        if reply is None:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(reply.content)
        self.notify(f"Copied reply ({len(reply.content):,} characters)")

    def action_copy_code(self) -> None:
        """The last fenced code block of the last reply to the clipboard."""
        reply = self.last_reply()
        blocks = code_blocks(reply.content) if reply is not None else []
        if not blocks:
            self.notify("No code block in the last reply", severity="warning")
            return
        self.copy_to_clipboard(blocks[-1])
        self.notify(f"Copied code block ({len(blocks[-1]):,} characters)")

    def action_help(self) -> None:
        from .dialogs import HelpScreen

        if isinstance(self.screen, HelpScreen):
            self.screen.action_close()
        elif not self.dialog_open:
            self.push_screen(HelpScreen())

    def get_system_commands(self, screen):
        """The palette (Ctrl+P) offers the rarer actions too."""
        from textual.app import SystemCommand

        yield from super().get_system_commands(screen)
        yield SystemCommand("Copy last reply", "Put the last reply on the clipboard (F8)", self.action_copy_reply)
        yield SystemCommand("Copy last code block", "Put the last reply's last code block on the clipboard (F9)",
                            self.action_copy_code)
        yield SystemCommand("Help", "The keys and what the highlight colours mean (F1)", self.action_help)

    # ------------------------------------------------------------------ other screens
    @property
    def dialog_open(self) -> bool:
        """A dialog is up: the F-keys do not stack another one on it."""
        from textual.screen import ModalScreen

        return isinstance(self.screen, ModalScreen)

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

        if not self.dialog_open and not self.generating:
            self.push_screen(SessionsScreen(self.sessions, self.session.id if self.session else None),
                             self.on_sessions_closed)

    def on_sessions_closed(self, result) -> None:
        """What the sessions dialog did: open one, start a new one, or renamed/deleted the current one."""
        if result is None:
            return
        if result.new:
            self.action_new_session()
        elif result.open is not None:
            self.open_session(result.open)
        elif self.session is not None and result.deleted_current:
            remaining = self.sessions.list()
            self.open_session(remaining[0].id) if remaining else self.action_new_session()
        elif self.session is not None and result.renamed_current:
            self.session.title = result.renamed_current
            self.sub_title = self.session.title

    def action_settings(self) -> None:
        from .screens import SettingsScreen

        if not self.dialog_open:
            limit = self.engine.n_ctx if self.engine is not None else None
            self.push_screen(SettingsScreen(self.settings, limit), self.apply_settings)

    def action_model_info(self) -> None:
        from .screens import ModelInfoScreen

        if self.model_path and not self.dialog_open:
            self.push_screen(ModelInfoScreen(self.model_path))

    def action_pick_model(self) -> None:
        from .screens import ModelPickerScreen

        if self.dialog_open:
            return
        if self.generating or self.engine is None:
            self.notify("Wait for the model to be idle before switching.", severity="warning")
            return
        self.push_screen(ModelPickerScreen(self.model_path), self.switch_model)

    def switch_model(self, name: str | None) -> None:
        """Load another model in place of this one (the chat stays; the store is checked again)."""
        if not name:
            return
        self.config = self.config.replace(model=name)
        previous, self.conversation = self.conversation, None  # no message is sent to a model being swapped out
        self.query_one(StatusBar).update(f"loading {name}…")
        self.load_engine(previous)

    def apply_settings(self, settings: Settings | None) -> None:
        if settings is None:  # the dialog was closed without saving
            return
        self.settings = settings
        if self.session is not None:
            self.session.settings = settings.to_dict()
            self.session.method = settings.method
            self.sessions.update(self.session)
        self.update_status()

    def on_documents_changed(self, message) -> None:
        """The documents screen indexed or removed documents: ground on its store from now on."""
        try:
            self.conversation.use_store(message.store_path)
            self.store_path = message.store_path
        except SenseError as exc:
            self.notify(str(exc), severity="error")
        self.update_status()


def run_app(config: ConversationConfig) -> int:
    app = SenseApp(config)
    app.run()
    if app.generating:  # quit during a reply that did not stop in time (a long prefill): the terminal is
        sys.stdout.flush()  # restored and the session saved; waiting for the decode thread would hang
        os._exit(0)
    return 0
