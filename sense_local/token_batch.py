"""What every llama.cpp context of ours shares: its size and thread parameters, and one reusable
batch filled through numpy views."""
from __future__ import annotations

import numpy as np

from . import native

llama_cpp = native.llama_cpp


def tokenize(vocab, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """llama.cpp's tokens of `text` in `vocab` (a second call when the first buffer was too small)."""
    data = text.encode("utf-8", errors="replace")
    cap = len(data) + 8
    buf = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


def context_params(*, n_ctx: int, n_batch: int, n_threads: int):
    """llama.cpp's default context parameters with our size, batch (= micro-batch) and threads."""
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = n_batch
    cparams.n_ubatch = n_batch
    cparams.n_threads = n_threads
    cparams.n_threads_batch = n_threads
    return cparams


class TokenBatch:
    """A llama_batch of capacity n (every token in sequence 0 unless `set_sequences` says
    otherwise, up to `max_seqs` sequences per token), filled through numpy views."""

    def __init__(self, n: int, max_seqs: int = 1):
        self.raw = llama_cpp.llama_batch_init(n, 0, max_seqs)
        self.max_seqs = max_seqs
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(n,))  # [n] int32
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(n,))  # [n] int32
        self.logits = np.ctypeslib.as_array(self.raw.logits, shape=(n,))  # [n] int8: row is an output
        self.n_seq = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(n,))  # [n] int32
        self.n_seq[:] = 1
        self.assign_sequence(n, 0)

    def assign_sequence(self, k: int, seq_id: int) -> None:
        """Put the first k tokens in sequence `seq_id`."""
        for i in range(k):
            self.raw.seq_id[i][0] = seq_id

    def set_sequences(self, i: int, seq_ids: list[int]) -> None:
        """Put token i in every sequence of `seq_ids` (a token shared by several branches)."""
        if len(seq_ids) > self.max_seqs:
            raise ValueError(f"a token can be in at most {self.max_seqs} sequences here")
        for j, s in enumerate(seq_ids):
            self.raw.seq_id[i][j] = s
        self.n_seq[i] = len(seq_ids)

    def fill(self, tokens: np.ndarray, first_pos: int) -> None:
        """Load `tokens` at positions first_pos.. (output flags are left as they are)."""
        k = len(tokens)
        self.token[:k] = tokens
        self.pos[:k] = np.arange(first_pos, first_pos + k, dtype=np.int32)
        self.raw.n_tokens = k

    def free(self) -> None:
        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None
