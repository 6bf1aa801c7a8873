"""Hard line wraps joined: the form a model writes when it quotes wrapped text.

Reference text (man pages, pydoc, e-mail, PDF extracts) breaks lines inside sentences; a model
that quotes it writes spaces there. A newline between two non-space characters is taken for such
a wrap. Paragraph breaks (blank lines), indented lines (code, lists) and everything inside a
fenced code block are kept.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

LINE_WRAP = re.compile(r"(?<=\S)\n(?=\S)")
FENCED = re.compile(r"(```.*?```)", re.S)  # split() keeps the fenced blocks at odd indices


def join_wraps(text: str) -> str:
    parts = FENCED.split(text)
    return "".join(part if i % 2 else LINE_WRAP.sub(" ", part) for i, part in enumerate(parts))


def rewrapped_tokens(engine, tokens: Sequence[int]) -> list[int] | None:
    """`tokens` re-tokenized with line wraps joined, or None when the text has no wraps."""
    text = engine.detokenize(tokens)
    joined = join_wraps(text)
    if joined == text:
        return None
    return engine.tokenize(joined, add_special=False)
