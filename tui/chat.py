"""The chat screen: the transcript of a session, the prompt box and the status bar. It sends the
session's messages to the app's conversation in a worker and streams the reply in, with its
accepted-draft highlighting and its figures."""
from __future__ import annotations

import threading
import time

from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from sense_local.conversation import Finished, Prepared
from sense_local.errors import SenseError
from sense_local.sessions import Message as StoredMessage
from sense_local.sessions import SessionStore

from .footer import ChatFooter
from .messages import GenerationDone, Grounded, PromptSubmitted, Reading, TokensBatch
from .settings import Settings
from .status import StatusBar, documents_field, live_stats, reply_figures
from .widgets import ChatMessage, PromptBox, Transcript, code_blocks, legend_text

WELCOME = ("Type a message and press Enter (Ctrl+J for a new line). F3 adds your documents, so answers can "
           "cite them; F5 settings, F7 other models, F4 sessions, F1 help, Ctrl+Q quits.")

# Tokens reach the UI in batches, at most this often: each batch re-renders the reply, and on a
# 2-core CPU that work is taken from decoding (measured: 20/s cost ~10% of tok/s, 5/s ~0%).
FRAME = 1 / 8
STATUS_EVERY = 0.5  # seconds between live status-bar updates
TITLE_MAX = 200  # characters of the first message kept as a session's title (the lists cut it to their width)


class ChatScreen(Screen):
    """The app's first screen. The app (SenseApp) owns the model (`app.conversation`) and routes the
    keys and dialogs; this screen owns the session on show and the reply under way."""

    DEFAULT_CLASSES = "chat"
    NARROW = 90  # columns below which the legend and the footer go compact
    SHORT = 20  # rows below which the legend hides and the prompt box shrinks

    def __init__(self, sessions: SessionStore, settings: Settings):
        super().__init__()
        self.sessions = sessions
        self.settings = settings  # the session's: its method, limits, system prompt, grounding
        self.session = None
        self.highlight = True
        self.generating = False
        self._cancel = threading.Event()
        self._reply: ChatMessage | None = None
        self._streamed = 0  # token events of the reply in progress shown so far
        self._status_at = 0.0  # when the status bar last showed live figures
        self.last_stats = None  # GenerationStats of the session's last finished reply here
        self._quitting = False  # quit asked during a reply: exit once the reply is stopped and saved
        self._reading_from: tuple[int, float] | None = None  # (tokens read, time) at the first progress of a prompt
        self.queued: list[str] = []  # messages sent during a reply: each goes once the one before has its answer

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        yield Transcript(id="transcript")
        yield Static(legend_text(), id="legend")
        yield PromptBox(id="prompt", soft_wrap=True, show_line_numbers=False)
        yield StatusBar("loading model…", id="status")
        yield ChatFooter()

    def on_mount(self) -> None:
        self.query_one("#prompt", PromptBox).focus()
        self.fit(self.app.size)

    def fit(self, size) -> None:
        """Degrade on small terminals: compact legend and footer, a shorter prompt box, no legend
        under SHORT rows; the status bar abbreviates itself."""
        from textual.css.query import NoMatches

        self.set_class(size.width < self.NARROW, "-narrow")
        self.set_class(size.height < self.SHORT, "-short")
        try:
            self.query_one("#legend", Static).update(legend_text(compact=size.width < self.NARROW))
            self.query_one(Footer).compact = size.width < self.NARROW
        except NoMatches:  # not composed yet: on_mount applies the same
            pass

    def on_key(self, event) -> None:
        """Typing while the transcript (or anything that takes no text) has focus goes to the prompt
        box, and Enter there sends: no keystroke is lost to focus."""
        from textual.widgets import Input, TextArea

        if isinstance(self.focused, (Input, TextArea)):
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

    def say(self, line: str) -> None:
        """A line in the status bar in place of the figures (the model loading, or why it did not)."""
        self.query_one(StatusBar).update(line)

    # ------------------------------------------------------------------ sessions
    def model_ready(self) -> None:
        """The app loaded a model: a model switch goes on with the session on show; at start the
        newest session opens (or a new one)."""
        if self.session is None:
            sessions = self.sessions.list()
            if sessions:
                self.open_session(sessions[0].id)
            else:
                self.new_session()
        self.update_status()

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
        self.app.sub_title = session.title
        self.last_stats = None  # figures belong to the session they came from
        self.update_status()

    def new_session(self) -> None:
        if self.generating:
            return
        model = self.app.model_path
        self.session = self.sessions.create(time.strftime("Chat %Y-%m-%d %H:%M"), model.name if model else "model",
                                            self.settings.method, self.settings.to_dict())
        transcript = self.query_one("#transcript", Transcript)
        transcript.remove_children()
        transcript.mount(Static(WELCOME, classes="welcome"))
        self.app.sub_title = self.session.title
        self.last_stats = None
        self.update_status()

    def on_sessions_closed(self, result) -> None:
        """What the sessions dialog did: open one, start a new one, or renamed/deleted the current one."""
        if result is None:
            return
        if result.new:
            self.new_session()
        elif result.open is not None:
            self.open_session(result.open)
        elif self.session is not None and result.deleted_current:
            remaining = self.sessions.list()
            self.open_session(remaining[0].id) if remaining else self.new_session()
        elif self.session is not None and result.renamed_current:
            self.session.title = result.renamed_current
            self.app.sub_title = self.session.title

    def apply_settings(self, settings: Settings | None) -> None:
        if settings is None:  # the dialog was closed without saving
            return
        self.settings = settings
        if self.session is not None:
            self.session.settings = settings.to_dict()
            self.session.method = settings.method
            self.sessions.update(self.session)
        self.update_status()

    # ------------------------------------------------------------------ chatting
    def on_prompt_submitted(self, message: PromptSubmitted) -> None:
        if self.app.engine is None or self.session is None:
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
            self.app.sub_title = self.session.title
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
        """The reply, decoded in this thread: its token events go to the screen in batches, at most
        one a FRAME, each with the reply's figures so far (live_stats, timed from its first token)."""
        s = self.settings
        conversation = self.app.conversation
        batch: list = []
        last_post = time.perf_counter()
        first_token_at: float | None = None
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
                        self.post_message(TokensBatch(batch, ev.stats, time.perf_counter()))
                    self.post_message(GenerationDone(ev))
                else:
                    batch.append((ev.text, ev.source, ev.soft))
                    now = time.perf_counter()
                    if first_token_at is None:
                        first_token_at = now
                    if now - last_post >= FRAME:
                        self.post_message(TokensBatch(batch, live_stats(conversation.stats, first_token_at, now), now))
                        batch, last_post = [], now
        except SenseError as exc:
            self.post_message(GenerationDone(None, str(exc)))
        except Exception as exc:  # a bug or a failed decode: said in the app, the chat goes on
            self.post_message(GenerationDone(None, f"internal error: {type(exc).__name__}: {exc}"))

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
        self._streamed += len(message.spans)
        if message.t - self._status_at >= STATUS_EVERY:
            self._status_at = message.t
            self.update_status(live=message.stats)

    def on_generation_done(self, message: GenerationDone) -> None:
        self.generating = False
        reply, self._reply = self._reply, None
        if message.error:
            self.notify(message.error, severity="error", timeout=15)
            if reply is not None:
                reply.remove()
            if self._quitting:
                self.app.exit()
            elif self.queued:  # not sent after a failure: back in the box, nothing lost
                self.query_one(PromptBox).text = "\n\n".join(self.queued)
                self.queued.clear()
            return
        finished = message.finished
        if finished.finish_reason == "cancelled" and finished.stats.tokens == 0 and not self._quitting:
            self._unask(reply)
            return
        self.last_stats = finished.stats
        footer = finished.summary()
        if reply is not None:
            reply.set_footer(footer)  # with a "stopped" mark: the transcript keeps it in view
            spans = [list(s) for s in reply.spans]
            self.sessions.add_message(self.session.id, StoredMessage(
                "assistant", reply.content, spans, {**finished.stats.to_dict(), "footer": footer, "sources": reply.sources}))
        self.update_status()
        if self._quitting:
            self.app.exit()
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

    def stop(self, quit_after: bool = False) -> None:
        """Stop the reply under way (the decoder checks between decodes); `quit_after`: the app exits
        once it is stopped and kept in the session, marked stopped."""
        self._quitting = self._quitting or quit_after
        self._cancel.set()

    # ------------------------------------------------------------------ display
    def toggle_highlight(self) -> None:
        self.highlight = not self.highlight
        for widget in self.query(ChatMessage):
            widget.highlight = self.highlight
        self.query_one("#legend").display = self.highlight

    def update_status(self, live=None) -> None:
        """The status bar: the reply's figures (`live`: the streaming reply's, else the last finished
        reply's), the method, the model and the documents."""
        app = self.app
        self.query_one(StatusBar).show(**reply_figures(live or self.last_stats), method=self.settings.method,
                                       model=app.model_path.name if app.model_path else None,
                                       **documents_field(app.store, app.store_path, app.engine))

    # ------------------------------------------------------------------ copy
    def last_reply(self) -> ChatMessage | None:
        """The newest assistant reply with text (the one streaming, if any)."""
        done = [m for m in self.query(ChatMessage) if m.role == "assistant" and m.content.strip()]
        return done[-1] if done else None

    def copy_reply(self) -> None:
        """The last reply to the clipboard (OSC 52: the terminal puts it on the system clipboard)."""
        reply = self.last_reply()
        if reply is None:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(reply.content)
        self.notify(f"Copied reply ({len(reply.content):,} characters)")

    def copy_code(self) -> None:
        """The last fenced code block of the last reply to the clipboard."""
        reply = self.last_reply()
        blocks = code_blocks(reply.content) if reply is not None else []
        if not blocks:
            self.notify("No code block in the last reply", severity="warning")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify(f"Copied code block ({len(blocks[-1]):,} characters)")
