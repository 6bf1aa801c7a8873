"""Which tokens of a source file are prose (comments and strings) rather than code.

A reply asked to rename an identifier renames it in the code, but in a docstring or a comment it
may or may not: bisect's edit ("rename the parameters lo and hi to low and high", the 1.5B) renamed
every `lo` in the code and kept all four in the docstrings; calendar's renamed `y1` in its
docstring but kept "for year, month" in English. So Predicted Outputs learns how a reply treats
renames in prose apart from in code (prediction.py). The scan is lexical and shared by the languages
people edit most: `#` and `//` comments to the end of the line, `/* */` blocks, and strings in
single, double or triple quotes (a backslash escapes the next byte). It needs no parser and is
never wrong for long: a quote it misreads ends at the end of the line (single-quoted strings do).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def prose_bytes(text: bytes) -> np.ndarray:
    """[len(text)] bool: True where a byte is inside a comment or a string (its delimiters included)."""
    prose = np.zeros(len(text), dtype=bool)
    i, n = 0, len(text)
    while i < n:
        c = text[i : i + 1]
        two, three = text[i : i + 2], text[i : i + 3]
        if c == b"#" or two == b"//":
            end = text.find(b"\n", i)
            end = n if end < 0 else end
        elif two == b"/*":
            end = text.find(b"*/", i + 2)
            end = n if end < 0 else end + 2
        elif three in (b'"""', b"'''"):
            end = text.find(three, i + 3)
            end = n if end < 0 else end + 3
        elif c in (b'"', b"'"):
            end = _string_end(text, i + 1, c)
        else:
            i += 1
            continue
        prose[i:end] = True
        i = max(end, i + 1)
    return prose


def _string_end(text: bytes, i: int, quote: bytes) -> int:
    """Just past the quote that closes a one-line string opened before i (or the end of the line)."""
    n = len(text)
    while i < n:
        c = text[i : i + 1]
        if c == b"\\":
            i += 2
            continue
        if c == quote:
            return i + 1
        if c == b"\n":
            return i
        i += 1
    return n


def prose_tokens(pieces: Sequence[bytes]) -> np.ndarray:
    """[len(pieces)] bool: True for a token whose first non-space byte is prose."""
    text = b"".join(pieces)
    prose = prose_bytes(text)
    out = np.zeros(len(pieces), dtype=bool)
    at = 0
    for i, piece in enumerate(pieces):
        lead = len(piece) - len(piece.lstrip())
        j = at + min(lead, max(len(piece) - 1, 0))
        out[i] = bool(prose[j]) if j < len(prose) else False
        at += len(piece)
    return out
