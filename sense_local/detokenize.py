"""Incremental, UTF-8-safe detokenization for streaming.

A token's piece may end in the middle of a multi-byte character; the incremental decoder holds
those bytes back until the character is complete, so streamed text never shows replacement
characters that the full text would not have.
"""
from __future__ import annotations

import codecs
from typing import Callable


class StreamDetokenizer:
    def __init__(self, piece_of: Callable[[int], bytes]):
        self._piece_of = piece_of
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        """Text that became complete with this token (may be empty)."""
        return self._decoder.decode(self._piece_of(token))

    def flush(self) -> str:
        """Whatever is still held back at the end of the stream."""
        return self._decoder.decode(b"", final=True)
