"""`logprobs` in OpenAI's two response shapes: chat's per-token entries (`logprobs.content`) and the legacy
completions object (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`). The values come
from the decoder (speculative/logprobs.py): the model's own log-probabilities, speculated tokens
included, one entry per generated token."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ..speculative.logprobs import TokenLogprob

Piece = Callable[[int], bytes]  # a token's bytes (Engine.piece)


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def chat_entries(tokens: Sequence[tuple[int, TokenLogprob]], piece: Piece) -> list[dict]:
    """OpenAI's `choices[].logprobs.content`: one entry per token, its bytes for tokens that are
    part of a character."""
    def entry(token: int, logprob: float) -> dict:
        raw = piece(token)
        return {"token": _text(raw), "logprob": logprob, "bytes": list(raw)}

    return [{**entry(tok, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]} for tok, lp in tokens]


def completion_logprobs(tokens: Sequence[tuple[int, TokenLogprob]], piece: Piece, top: int, offset: int = 0) -> dict:
    """The legacy completions object; `offset`: where the generated text starts in the returned text
    (the prompt's length with `echo`)."""
    texts = [_text(piece(tok)) for tok, _ in tokens]
    offsets, at = [], offset
    for text in texts:
        offsets.append(at)
        at += len(text)
    return {"tokens": texts, "token_logprobs": [lp.logprob for _, lp in tokens],
            "top_logprobs": [{_text(piece(t)): v for t, v in lp.top} for _, lp in tokens] if top else None,
            "text_offset": offsets}
