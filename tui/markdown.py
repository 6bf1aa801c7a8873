"""Replies as Markdown with the highlight spans inside.

A small Markdown subset (fenced code, inline code, bold, italic, headings, lists, quotes, rules) is
rendered into one rich `Text`. Every character shown that comes from the reply is copied from a known
offset of it, so the spans, which are offsets of the reply's source text, are laid over the rendered
text afterwards: a highlighted token stays highlighted inside a code block or a bold word, and the
markers (``` fences, backticks, asterisks, #) are not shown. One pass over the text: cheap enough to
redo for every batch of a streaming reply (a reply stopped inside a fence shows the fence as code).
"""
from __future__ import annotations

import re
from bisect import bisect_right

from rich.text import Text

CODE = "#e6e6e6 on #262b33"  # code blocks and inline code
CODE_LABEL = "dim italic"
HEADING = ("bold underline", "bold", "bold", "bold italic", "italic", "italic")  # by level 1-6
QUOTE = "italic #b0b0b0"

FENCE_OPEN = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^`\n]*)$")
HEADING_LINE = re.compile(r"(#{1,6})[ \t]+")
BULLET = re.compile(r"([ \t]*)[-*+][ \t]+")
QUOTE_LINE = re.compile(r">[ \t]?")
RULE = re.compile(r"[ \t]{0,3}([-*_])([ \t]*\1){2,}[ \t]*$")
# inline: `code`, **bold** / __bold__, *italic* / _italic_ (underscores only at word edges: snake_case stays)
INLINE = re.compile(
    r"(?P<code>(?P<ticks>`+)(?P<code_text>.+?)(?P=ticks))"
    r"|\*\*(?P<bold>[^\s*](?:.*?[^\s*])?)\*\*"
    r"|(?<!\w)__(?P<bold2>[^\s_](?:.*?[^\s_])?)__(?!\w)"
    r"|(?<![*\w])\*(?P<italic>[^\s*](?:[^*]*?[^\s*])?)\*(?!\*)"
    r"|(?<![_\w])_(?P<italic2>[^\s_](?:[^_]*?[^\s_])?)_(?![_\w])"
)


class _Builder:
    """The rendered text, and where each piece of it came from: (source start, text start, length)."""

    def __init__(self, source: str):
        self.source = source
        self.text = Text()
        self.pieces: list[tuple[int, int, int]] = []

    def copy(self, start: int, end: int, style: str = "") -> None:
        """Show source[start:end]."""
        if end > start:
            self.pieces.append((start, len(self.text), end - start))
            self.text.append(self.source[start:end], style=style)

    def add(self, text: str, style: str = "") -> None:
        """Show text that is not in the source (a bullet, a rule, a code block's language)."""
        self.text.append(text, style=style)

    def inline(self, start: int, end: int, style: str = "") -> None:
        """Show source[start:end] with its inline markup rendered (markers dropped)."""
        line = self.source[start:end]
        at = 0
        for m in INLINE.finditer(line):
            self.copy(start + at, start + m.start(), style)
            if m.group("code"):
                body = m.start("code_text")
                self.copy(start + body, start + m.end("code_text"), f"{style} {CODE}".strip())
            else:
                name = next(g for g in ("bold", "bold2", "italic", "italic2") if m.group(g) is not None)
                inner = "bold" if name.startswith("bold") else "italic"
                # the inner text may hold code or the other emphasis
                self.inline(start + m.start(name), start + m.end(name), f"{style} {inner}".strip())
            at = m.end()
        self.copy(start + at, end, style)

    def overlay(self, spans: list[tuple[int, int, str]]) -> None:
        """Style the shown characters of each source range (start, end, style)."""
        starts = [p[0] for p in self.pieces]
        for start, end, style in spans:
            i = max(bisect_right(starts, start) - 1, 0)
            while i < len(self.pieces) and self.pieces[i][0] < end:
                src, out, n = self.pieces[i]
                a, b = max(start, src), min(end, src + n)
                if a < b:
                    self.text.stylize(style, out + a - src, out + b - src)
                i += 1


def _lines(source: str):
    """(start, end) of each line of `source`, without its newline."""
    at = 0
    for line in source.split("\n"):
        yield at, at + len(line)
        at += len(line) + 1


def render_markdown(source: str, spans: list[tuple[int, int, str]] = ()) -> Text:
    """`source` rendered as Markdown (the subset above) with each (start, end, style) of `spans`, in
    source offsets, laid over the characters it covers."""
    b = _Builder(source)
    fence = None  # the open fence's marker while inside a code block
    first = True
    for start, end in _lines(source):
        line = source[start:end]
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence) and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None  # the closing fence is not shown
                continue
        if not first:
            b.add("\n")
        first = False
        if fence is not None:
            b.add(" ", CODE)
            b.copy(start, end, CODE)
            b.add(" ", CODE)
            continue
        m = FENCE_OPEN.match(line)
        if m:
            fence = m.group(1)
            b.add(m.group(2).strip() or "code", CODE_LABEL)
            continue
        if RULE.match(line):
            b.add("─" * 24, "dim")
            continue
        m = HEADING_LINE.match(line)
        if m:
            b.inline(start + m.end(), end, HEADING[len(m.group(1)) - 1])
            continue
        m = QUOTE_LINE.match(line)
        if m:
            b.add("▌ ", "dim")
            b.inline(start + m.end(), end, QUOTE)
            continue
        m = BULLET.match(line)
        if m:
            b.add(m.group(1) + "• ")
            b.inline(start + m.end(), end)
            continue
        b.inline(start, end)
    b.overlay(list(spans))
    return b.text


def span_ranges(spans, style_of) -> list[tuple[int, int, str]]:
    """[(text, source, soft)] spans as (start, end, style) offsets into their joined text; spans whose
    style is empty (the target's own tokens) are left out."""
    ranges, at = [], 0
    for text, source, soft in spans:
        style = style_of(source, soft)
        if style and text:
            ranges.append((at, at + len(text), style))
        at += len(text)
    return ranges
