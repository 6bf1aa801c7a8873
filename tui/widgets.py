"""Chat transcript widgets: messages with per-source highlighting, the prompt box, the status bar."""
from __future__ import annotations

from rich.markdown import Markdown as RichMarkdown
from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static, TextArea

# One style per provenance of a token (TokenEvent.source, or "soft" for soft-accepted drafts).
SOURCE_STYLES = {
    "target": "",
    "context": "bold #7ec8ff on #15324a",
    "docs": "bold #e0b3ff on #35214a",
    "pld": "bold #9be89b on #173d22",
    "soft": "italic #ffd27f on #4a3a10",
}
LEGEND_LABELS = {"context": "live context", "docs": "documents", "pld": "prompt lookup", "soft": "soft-accepted"}


def span_style(source: str, soft: bool) -> str:
    return SOURCE_STYLES["soft"] if soft else SOURCE_STYLES.get(source, SOURCE_STYLES["context"])


def legend_text() -> Text:
    text = Text("drafted & accepted: ")
    for source, label in LEGEND_LABELS.items():
        text.append(f" {label} ", style=SOURCE_STYLES[source])
        text.append(" ")
    text.append("  target's own tokens: plain")
    return text


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
        text = Text()
        for chunk, source, soft in self.spans or [(self._content, "target", False)]:
            text.append(chunk, style=span_style(source, soft) if self.highlight else "")
        return text

    def refresh_content(self) -> None:
        if self.role == "user":
            body = Text(self._content)
        elif self.highlight:
            body = self.highlighted_text()
        else:
            body = RichMarkdown(self._content or " ")
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

    class Submitted(Message):
        def __init__(self, text: str):
            super().__init__()
            self.text = text

    async def _on_key(self, event) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text.strip()
            if text:
                self.post_message(self.Submitted(text))
                self.clear()
        elif event.key in ("ctrl+j", "shift+enter"):
            event.stop()
            event.prevent_default()
            self.insert("\n")


class StatusBar(Static):
    def show(self, **fields) -> None:
        parts = [f"{k} {v}" for k, v in fields.items() if v is not None]
        self.update(" · ".join(parts))
