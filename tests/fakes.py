"""A fake engine for fast tests of loop logic (in addition to the real-model tests, never instead).

Its "model" is deterministic and position-dependent: after token t at position p the greedy next
token is (7 t + p) mod V, so a loop that truncates the KV cache wrongly produces wrong tokens.
"""
from __future__ import annotations

import contextlib

import numpy as np

from sense_local.engine import EvalOutput

V = 64
EOS = 0


def true_next(token: int, pos: int) -> int:
    return (7 * token + pos) % V


class FakeEngine:
    n_ctx = 4096
    n_vocab = V
    n_embd = 4

    def __init__(self, eos_at: int | None = None):
        self.tokens: list[int] = []
        self.eos_at = eos_at  # absolute position whose next token is EOS
        self.decodes: list[int] = []  # sizes of every eval call
        self.one_token_steps = 0  # of them, the plain steps (eval_one)

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def truncate(self, n: int) -> None:
        del self.tokens[n:]

    def cancellable(self, cancel):
        return contextlib.nullcontext()  # fake decodes are instant: nothing to stop mid-way

    def prefill(self, prompt, *, outputs="last", with_keys=False, cancel=None, progress=None):
        self.tokens = []
        return self.eval(prompt, 0, outputs=outputs, with_keys=with_keys)

    def eval(self, tokens, start_pos=None, *, outputs="all", with_keys=True):
        tokens = [int(t) for t in tokens]
        start = self.n_past if start_pos is None else start_pos
        assert start <= self.n_past
        del self.tokens[start:]
        self.tokens.extend(tokens)
        self.decodes.append(len(tokens))
        logits = np.stack([self._row(t, start + i) for i, t in enumerate(tokens)])  # EOS only where asked for
        rows = logits if outputs == "all" else logits[-1:]
        return EvalOutput(rows, np.zeros((len(rows), self.n_embd), np.float32))

    def eval_one(self, token: int, *, with_keys: bool = False):
        self.one_token_steps += 1
        return self.eval([token], outputs="last", with_keys=with_keys)

    def _row(self, token: int, pos: int) -> np.ndarray:
        nxt = EOS if self.eos_at == pos else true_next(token, pos)
        if nxt == EOS and self.eos_at != pos:
            nxt = 1
        row = np.zeros(V, np.float32)
        row[nxt] = 5.0
        return row

    def eval_tree(self, root, tokens, parents, *, with_keys=True):
        start = self.n_past
        depth = []
        for p in parents.tolist():
            depth.append(1 if p < 0 else depth[p] + 1)
        self.tokens.append(int(root))
        self.decodes.append(len(tokens) + 1)
        rows = [self._row(int(root), start)] + [self._row(int(t), start + d) for t, d in zip(tokens.tolist(), depth)]
        self.pending = start
        return EvalOutput(np.stack(rows), np.zeros((len(rows), self.n_embd), np.float32))

    def keep_path(self, path, tokens):
        assert self.pending == self.n_past - 1
        self.pending = None
        self.tokens.extend(int(tokens[i]) for i in path)

    def is_eog(self, token: int) -> bool:
        return token == EOS

    def piece(self, token: int) -> bytes:
        return f"<{token}>".encode()


def greedy_reference(prompt: list[int], n: int, eos_at: int | None = None) -> list[int]:
    out, tok, pos = [], prompt[-1], len(prompt) - 1
    for _ in range(n):
        nxt = EOS if eos_at == pos else true_next(tok, pos)
        if nxt == EOS and eos_at != pos:
            nxt = 1
        if nxt == EOS:
            break
        out.append(nxt)
        tok, pos = nxt, pos + 1
    return out
