"""Which tokens of a source file are prose (comments and strings) rather than code.

A reply asked to rename an identifier renames it in the code, but in a docstring or a comment it
may or may not: bisect's edit ("rename the parameters lo and hi to low and high", the 1.5B) renamed
every `lo` in the code and kept all four in the docstrings; calendar's renamed `y1` in its
docstring but kept "for year, month" in English. So Predicted Outputs learns how a reply treats
renames in prose apart from in code (prediction.py). The scan is lexical and shared by the languages
people edit most: `#` comments to the end of the line, strings in single, double or triple quotes
(a backslash escapes the next byte), and, unless the text looks like Python (where `//` divides),
`//` comments and `/* */` blocks. It needs no parser and is never wrong for long: a quote it
misreads ends at the end of the line (single-quoted strings do). One regular expression, so a
100 KB file is scanned in milliseconds before a reply's first token.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_STRINGS_AND_HASH = [
    rb'"""[\s\S]*?(?:"""|\Z)', rb"'''[\s\S]*?(?:'''|\Z)",  # triple-quoted, to the closing quotes
    rb'"(?:\\[\s\S]|[^"\\\n])*(?:"|(?=\n)|\Z)', rb"'(?:\\[\s\S]|[^'\\\n])*(?:'|(?=\n)|\Z)",  # one line
    rb"#[^\n]*",
]
_C_COMMENTS = [rb"//[^\n]*", rb"/\*[\s\S]*?(?:\*/|\Z)"]
PYTHON_PROSE = re.compile(b"|".join(_STRINGS_AND_HASH))
OTHER_PROSE = re.compile(b"|".join(_C_COMMENTS + _STRINGS_AND_HASH))
LOOKS_LIKE_PYTHON = re.compile(rb"^[ \t]*(?:def \w+\(|class \w+\s*[(:]|from [\w.]+ import |import [\w.]+[ \t]*$)", re.M)


def prose_bytes(text: bytes) -> np.ndarray:
    """[len(text)] bool: True where a byte is inside a comment or a string (its delimiters included)."""
    prose = np.zeros(len(text), dtype=bool)
    pattern = PYTHON_PROSE if LOOKS_LIKE_PYTHON.search(text) else OTHER_PROSE
    for m in pattern.finditer(text):
        prose[m.start() : m.end()] = True
    return prose


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
