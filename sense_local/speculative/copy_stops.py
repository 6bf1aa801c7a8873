"""Where a copy of the prompt stops: the end of each passage of a grounded question, and the start
of each earlier reply of a conversation (`reply_starts`).

A grounded answer often quotes a passage to its end; prompt lookup, following the copy, then drafts
on into what comes next in the prompt: the next passage's header ("[2] try.txt, line 203") or the
question, which the answer does not write. Replayed on the 1.5B's quick suite (docqa-rag-pass), one
such draft of 63 tokens kept 1 and cost as much as 19 one-token decodes. The grounding prompt's own
format says where a passage ends (grounding/prompt.py, AFTER_PASSAGE), so a copy's draft is
doubted from there on: prompt lookup gives the tokens from the one that starts the next part a
tenth of the chance of those before them (pld.PAST_STOP), and the loop's sizing stops the draft
before them unless a decode run padded to a cheaper size carries them for nothing. (Cut there
instead, a 12-token proposal went as 3 and then 7 tokens where one padded decode of 16 rows took
all 12: replayed on the 1.5B's quick-suite recording, docqa-rag-pass 1.50x -> 1.64x, docqa-rag
1.15x -> 1.18x for `pld`, 1.13x -> 1.17x for `sense`; the 135M's the same.)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..grounding.prompt import AFTER_PASSAGE

HEADER_MAX = 8  # the most tokens a role header (control token, role, newline) is taken to have


def copy_stops(engine, tokens: Sequence[int]) -> list[int]:
    """Indices of the tokens in `tokens` that start the part after a passage (the token holding its
    first byte); a draft copying `tokens` stops before each."""
    pieces = [engine.piece(int(t)) for t in tokens]
    starts = [m.start(1) for m in AFTER_PASSAGE.finditer(b"".join(pieces))]  # byte offsets of the next parts
    if not starts:
        return []
    ends = np.cumsum([len(p) for p in pieces])  # [n] byte offset where each token ends
    return sorted({int(i) for i in np.searchsorted(ends, starts, side="right")})


def reply_starts(tokens: Sequence[int], special: np.ndarray) -> list[int]:
    """Indices in `tokens` (a chat prompt, ending in the assistant's header) where an earlier reply
    of the assistant begins: after each earlier copy of that header (its last control token and
    what follows it, e.g. "<|im_start|>assistant\n"). special: [V] bool, the control tokens.

    A reply beginning as an earlier one did ("Use the") matches that reply back through the header
    the two share: two tokens of its own, seven counted, and prompt lookup drafted 15 tokens at its
    8-15-token prior where the 135M kept 0-3 (the quick suite's chat-1 and chat-3). A stop here
    counts such a match from the reply's start."""
    last = next((i for i in range(len(tokens) - 1, max(-1, len(tokens) - 1 - HEADER_MAX), -1)
                 if special[int(tokens[i])]), None)
    if last is None or last == len(tokens) - 1:
        return []
    toks = [int(t) for t in tokens]
    header = toks[last:]
    n = len(header)
    return [i + n for i in range(last) if toks[i] == header[0] and toks[i : i + n] == header]
