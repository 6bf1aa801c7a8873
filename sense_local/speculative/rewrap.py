"""Hard line wraps joined: the form a model writes when it quotes wrapped text.

Reference text (man pages, pydoc, e-mail, PDF extracts) breaks lines inside sentences; a model
that quotes it writes spaces there. A newline between two non-space characters is taken for such
a wrap. Paragraph breaks (blank lines), indented lines (code, lists) and everything inside a
fenced code block are kept.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

LINE_WRAP = re.compile(r"(?<=\S)\n(?=\S)")
FENCED = re.compile(r"(```.*?```)", re.S)  # split() keeps the fenced blocks at odd indices


def join_wraps(text: str) -> str:
    parts = FENCED.split(text)
    return "".join(part if i % 2 else LINE_WRAP.sub(" ", part) for i, part in enumerate(parts))


def rewrapped_tokens(engine, tokens: Sequence[int]) -> list[int] | None:
    """`tokens` re-tokenized with line wraps joined, or None when the text has no wraps.

    Wraps are joined in the text between control tokens (the chat template's `<|im_end|>`, which
    render as no text), never across them, and the control tokens stay in the joined prompt: joined
    without them, a prompt's last lines ran on into the next turn's role name, so a copy of a pasted
    function's end drafted 31 tokens past it with no end of turn for the loop to cut at
    (code-glob.has_magic, the 1.5B: 1 of 31 kept). The whole text is tokenized once (a tokenizer that
    opens every call with a space, SentencePiece's, adds it once, as to the prompt)."""
    parts: list[str] = []
    changed = False
    start = 0
    for end in range(len(tokens) + 1):
        if end < len(tokens) and engine.piece(int(tokens[end])):
            continue  # inside a run of text
        text = engine.detokenize(tokens[start:end])
        joined = join_wraps(text)
        changed |= joined != text
        parts.append(joined)
        if end < len(tokens):
            parts.append(engine.detokenize_special(int(tokens[end])))  # the control token, parsed back below
        start = end + 1
    return engine.tokenize("".join(parts), add_special=False, parse_special=True) if changed else None


class JoinedPrompt:
    """The prompt with its wraps joined, aligned with the raw prompt by byte offset.

    Joining swaps a newline for a space, so both texts have the same length and a raw token and a
    joined token that end at the same byte end at the same place in the text. tokens: [J] int32
    joined tokens; at: [P] int64, for raw token i the joined token ending where it ends (-1: none).
    """

    def __init__(self, engine, prompt: Sequence[int]):
        self.tokens = np.zeros(0, np.int32)
        self.at = np.full(len(prompt), -1, np.int64)
        joined = rewrapped_tokens(engine, prompt)
        if not joined:
            return
        raw_end = np.cumsum([len(engine.piece(int(t))) for t in prompt])
        joined_end = np.cumsum([len(engine.piece(int(t))) for t in joined])
        if len(raw_end) == 0 or len(joined_end) == 0 or raw_end[-1] != joined_end[-1]:
            return  # not a pure newline-for-space swap at the byte level: no alignment
        self.tokens = np.asarray(joined, np.int32)
        j = np.searchsorted(joined_end, raw_end)  # first joined token ending at or after each raw end
        found = (j < len(joined_end)) & (joined_end[np.minimum(j, len(joined_end) - 1)] == raw_end)
        self.at = np.where(found, j, -1)

    def aligned(self, raw_positions: np.ndarray) -> np.ndarray:
        """[m] the joined token ending where each raw token ends (-1: none, or past the prompt)."""
        inside = raw_positions < len(self.at)
        return np.where(inside, self.at[np.minimum(raw_positions, len(self.at) - 1)], -1)
