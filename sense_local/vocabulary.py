"""The loaded model's vocabulary: tokenizing, token pieces, the end-of-generation and special-token
masks and the fill-in-the-middle markers (one llama.cpp vocabulary, read once at load)."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import native
from .token_batch import tokenize

llama_cpp = native.llama_cpp


@dataclass(frozen=True)
class FimTokens:
    """The model's fill-in-the-middle tokens (-1: the model has none): prefix, suffix and middle
    markers, and the repository / file separators of the repo-level layout (fim.py)."""

    pre: int
    suf: int
    mid: int
    rep: int
    sep: int

    @property
    def usable(self) -> bool:
        return min(self.pre, self.suf, self.mid) >= 0


class Vocabulary:
    """The vocabulary part of an Engine: `_read_vocabulary(model)` once the model is loaded."""

    def _read_vocabulary(self, model) -> None:
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.bos_id = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos_id = llama_cpp.llama_vocab_eos(self._vocab)
        self._is_eog = np.zeros(self.n_vocab, dtype=bool)  # [n_vocab]
        self._is_special = np.zeros(self.n_vocab, dtype=bool)  # [n_vocab] control/EOG tokens
        for t in range(self.n_vocab):
            if llama_cpp.llama_vocab_is_eog(self._vocab, t):
                self._is_eog[t] = True
                self._is_special[t] = True
            elif llama_cpp.llama_vocab_is_control(self._vocab, t):
                self._is_special[t] = True
        self.fim = FimTokens(*(int(getattr(llama_cpp, f"llama_vocab_fim_{k}")(self._vocab))
                               for k in ("pre", "suf", "mid", "rep", "sep")))
        for t in (self.fim.pre, self.fim.suf, self.fim.mid):  # a FIM marker in the output: the middle is done
            if t >= 0:
                self._is_eog[t] = self._is_special[t] = True

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return tokenize(self._vocab, text, add_special, parse_special)  # input is cleaned where it enters (text_input.py)

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to in generated text (control tokens render empty)."""
        cached = self._pieces.get(token)
        if cached is None:
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def detokenize_special(self, token: int) -> str:
        """A token's text with special tokens rendered (e.g. '<|im_end|>'); '' for token -1."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def detokenize(self, tokens) -> str:
        return b"".join(self.piece(int(t)) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._is_eog[token])

    @property
    def special_mask(self) -> np.ndarray:
        """[n_vocab] bool: control and end-of-generation tokens."""
        return self._is_special
