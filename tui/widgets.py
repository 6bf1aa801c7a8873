"""Chat transcript widgets: messages with per-source highlighting, the legend, the prompt box."""
from __future__ import annotations

import re

from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static, TextArea

from .markdown import render_markdown, span_ranges
from .messages import PromptSubmitted

# One style per provenance of a token (TokenEvent.source, or "soft" for soft-accepted drafts).
SOURCE_STYLES = {
    "target": "",
    "context": "bold #7ec8ff on #15324a",
    "docs": "bold #e0b3ff on #35214a",
    "rest": "bold #e0b3ff on #35214a",  # REST's drafts come from the documents too
    "pld": "bold #9be89b on #173d22",
    "prediction": "bold #9be89b on #173d22",  # a code block pasted in the prompt, followed as a prediction
    "history": "bold #ffc48a on #4a2c12",  # the model's earlier replies (reply_history.py)
    "history-ngram": "bold #ffc48a on #4a2c12",  # ... matched word for word
    "soft": "italic #ffd27f on #4a3a10",
}
LEGEND_LABELS = {"context": "live context", "docs": "documents", "pld": "prompt lookup", "history": "history",
                 "soft": "soft-accepted"}


def span_style(source: str, soft: bool) -> str:
    return SOURCE_STYLES["soft"] if soft else SOURCE_STYLES.get(source, SOURCE_STYLES["context"])


LEGEND_SHORT = {"context": "ctx", "docs": "docs", "pld": "lookup", "history": "hist", "soft": "soft"}


def legend_text(compact: bool = False) -> Text:
    """The highlight legend; `compact` fits a narrow terminal (short labels, no explanation)."""
    text = Text("" if compact else "drafted & accepted: ")
    for source, label in (LEGEND_SHORT if compact else LEGEND_LABELS).items():
        text.append(f" {label} ", style=SOURCE_STYLES[source])
        text.append(" ")
    if not compact:
        text.append("  target's own tokens: plain")
    return text


# A fenced code block: ``` or ~~~ (with an optional info string) to the same fence, or to the end of a
# reply that stopped inside it.
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(.*?)(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[str]:
    """The contents of the fenced code blocks in `text`, fences and info strings left out."""
    return [m.group(2).rstrip("\n") for m in FENCE.finditer(text)]


class Transcript(VerticalScroll):
    """The conversation. It follows its newest text: whenever its content or its size changes while
    it shows its end (text streamed in, a footer or sources added, a resize that re-wraps lines), it
    scrolls to the new end. A user who scrolled up to read stays where they are, until they scroll
    back down. (Textual's `anchor()` does this too, but pins short content to the bottom.)"""

    def at_end(self) -> bool:
        return self.scroll_y >= self.max_scroll_y - 1

    def _size_updated(self, *args, **kwargs) -> bool:  # Textual's hook for a new size or content size
        following = self.at_end()  # judged on the old size: the new one has not been laid out yet
        changed = super()._size_updated(*args, **kwargs)
        if changed and following:
            self.scroll_end(animate=False)
        return changed


class ChatMessage(Static):
    """One message. Assistant replies keep their spans [(text, source, soft)] for highlighting."""

    highlight: reactive[bool] = reactive(True)

    def __init__(self, role: str, content: str = "", spans: list | None = None, sources: list | None = None):
        super().__init__(classes=f"message {role}")
        self.role = role
        self.spans: list[tuple[str, str, bool]] = [tuple(s) for s in (spans or [])]
        self._content = content if not self.spans else "".join(s[0] for s in self.spans)
        self.footer = ""
        self.sources: list[dict] = list(sources or [])  # Source.to_dict() of what the reply was grounded on

    @property
    def content(self) -> str:
        return self._content

    def append_spans(self, spans: list[tuple[str, str, bool]]) -> None:
        for text, source, soft in spans:
            if self.spans and self.spans[-1][1] == source and self.spans[-1][2] == soft:
                self.spans[-1] = (self.spans[-1][0] + text, source, soft)
            else:
                self.spans.append((text, source, soft))
            self._content += text
        self.refresh_content()

    def set_footer(self, footer: str) -> None:
        self.footer = footer
        self.refresh_content()

    def set_sources(self, sources: list[dict]) -> None:
        self.sources = list(sources)
        self.refresh_content()

    def sources_text(self) -> Text:
        text = Text("Sources:", style="bold dim")
        for s in self.sources:
            where = f"page {s['page']}" if s.get("page") else f"line {s['line']}"
            text.append(f"\n [{s['number']}] ", style="bold")
            text.append(f"{s['path']}, {where}", style="underline")
            text.append(f"  {s['snippet'][:120]}", style="dim italic")
        return text

    def highlighted_text(self) -> Text:
        """The reply's source text with the span styles, Markdown not rendered."""
        text = Text()
        for chunk, source, soft in self.spans or [(self._content, "target", False)]:
            text.append(chunk, style=span_style(source, soft) if self.highlight else "")
        return text

    def refresh_content(self) -> None:
        if self.role == "user":
            body = Text(self._content)
        else:  # Markdown, with the spans' styles over it while highlighting is on
            body = render_markdown(self._content, span_ranges(self.spans, span_style) if self.highlight else ())
        extras = ([self.sources_text()] if self.sources else []) + ([Text(self.footer, style="dim")] if self.footer else [])
        if extras:
            from rich.console import Group

            body = Group(body, *extras)
        self.update(body)

    def on_mount(self) -> None:
        self.refresh_content()

    def watch_highlight(self, _: bool) -> None:
        if self.is_mounted:
            self.refresh_content()


class PromptBox(TextArea):
    """Multi-line input: Enter sends, Ctrl+J (or Shift+Enter where the terminal reports it) adds a newline."""

    SEND_KEYS = ("enter",)
    NEWLINE_KEYS = ("ctrl+j", "shift+enter")

    def action_submit(self) -> None:
        """Send the text (if any) and clear the box."""
        text = self.text.strip()
        if text:
            self.post_message(PromptSubmitted(text))
            self.clear()

    async def _on_key(self, event) -> None:
        if event.key in self.SEND_KEYS:
            event.stop()
            event.prevent_default()
            self.action_submit()
        elif event.key in self.NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
