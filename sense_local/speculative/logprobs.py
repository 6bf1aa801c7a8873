"""Log-probabilities of emitted tokens (OpenAI's `logprobs` / `top_logprobs`).

Taken from the model's own distribution at the row that produced the token: log-softmax of the raw
logits, before temperature, truncation, penalties or a grammar (vLLM's default, `raw_logprobs`), so
they say what the model thought, whatever the request's sampling did with it. A speculated token's
row is the verification decode's row for it, the same row sequential decoding would have computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_TOP = 20  # OpenAI's cap on top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    logprob: float  # log p(token)
    top: tuple[tuple[int, float], ...] = ()  # the n likeliest (token, log p), likeliest first


def token_logprob(row: np.ndarray, token: int, top: int) -> TokenLogprob:
    """row [V] raw logits; the token's log-probability and the `top` likeliest tokens'."""
    m = float(row.max())
    log_z = m + float(np.log(np.exp(row - m, dtype=np.float32).sum(dtype=np.float64)))
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        ids = np.argpartition(row, -top)[-top:]
        ids = ids[np.argsort(-row[ids], kind="stable")]
        best = tuple((int(i), float(row[i]) - log_z) for i in ids)
    return TokenLogprob(float(row[token]) - log_z, best)
