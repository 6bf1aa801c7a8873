"""Text that enters from outside (arguments, stdin, chat lines): one decoding policy.

Input is UTF-8. Invalid bytes are replaced with U+FFFD, and the user is told once per process on
stderr (never a traceback). Arguments reach Python with undecodable bytes as lone surrogates
(PEP 383); they are mapped back to their bytes first, then decoded by the same rule.
"""
from __future__ import annotations

import sys

_warned = False


def _note(where: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(f"sense-local: note: {where} is not valid UTF-8; invalid bytes were replaced with U+FFFD",
              file=sys.stderr)


def decode_bytes(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _note(where)
        return data.decode("utf-8", errors="replace")


def clean(text: str, where: str) -> str:
    """A str that may carry surrogate escapes (from argv or a lenient stream) as valid Unicode."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return decode_bytes(text.encode("utf-8", errors="surrogateescape"), where) \
            if _only_escapes(text) else _replace_surrogates(text, where)


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def _replace_surrogates(text: str, where: str) -> str:
    _note(where)
    return text.encode("utf-8", errors="replace").decode("utf-8")


def read_stdin(where: str = "standard input") -> str:
    """All of stdin as text; a closed stdin reads as empty."""
    stream = getattr(sys.stdin, "buffer", None)
    if sys.stdin is None or stream is None:
        return ""
    try:
        return decode_bytes(stream.read(), where)
    except (OSError, ValueError):  # closed descriptor
        return ""


def read_line(where: str = "standard input") -> str | None:
    """One line of stdin as text, or None at its end (or when stdin is closed)."""
    stream = getattr(sys.stdin, "buffer", None) if sys.stdin is not None else None
    if stream is None:
        return None
    try:
        data = stream.readline()
    except (OSError, ValueError):
        return None
    return decode_bytes(data, where) if data else None


def argument(value: str, where: str) -> str:
    """A command-line argument ('-' reads stdin) as valid text."""
    return read_stdin() if value == "-" else clean(value, where)


def read_file(path: str, where: str) -> str:
    """A text file's content ('-': stdin); SenseError (one line) when it cannot be read."""
    from pathlib import Path

    from .errors import SenseError

    if path == "-":
        return read_stdin(where)
    try:
        return decode_bytes(Path(path).expanduser().read_bytes(), where)
    except OSError as exc:
        raise SenseError(f"{where}: cannot read {path}: {exc.strerror or exc}") from None
