"""A run of tokens decoded in n_batch chunks on one of the engine's contexts: its own, or the plain
layout's (plain_layout.py), which holds the same conversation and hands it back after."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from . import native
from .errors import Cancelled

llama_cpp = native.llama_cpp

# llama_get_logits answering the buffer's address as an int (its own function object: the shared one
# keeps its float pointer), so a one-token decode's row is viewed again only when the buffer moved
_logits_address = llama_cpp.llama_cpp._lib["llama_get_logits"]
_logits_address.argtypes, _logits_address.restype = [llama_cpp.llama_context_p_ctypes], ctypes.c_void_p


@dataclass
class EvalOutput:
    logits: np.ndarray  # [k, n_vocab] float32, view valid until the next eval
    keys: np.ndarray  # [k, n_embd] float32 key states, view valid until the next eval
    reused: int = 0  # prefill: prompt tokens whose KV entries were kept, not evaluated again


class ContextHolder:
    """What decodes on a llama.cpp context need of its holder (the engine, its plain layout), which
    has `_ctx`, `key_source`, `_cancel`, `n_vocab`, `n_embd` and `_no_keys` ([0, n_embd])."""

    def _decode(self, batch) -> int:
        self.key_source.before_decode()
        return self._cancel.decode(self._ctx, batch)

    _row_at, _row = None, None  # the address of the one-token decode's logits, and their view [1, n_vocab]

    def _one_row(self) -> np.ndarray:
        """[1, n_vocab] view of a one-output decode's logits, made again only when llama.cpp's buffer
        moved (every one-token step of plain decoding reads it: measured in `Engine.eval_one`)."""
        at = _logits_address(self._ctx)
        if at != self._row_at:
            self._row_at = at
            self._row = np.frombuffer((ctypes.c_float * self.n_vocab).from_address(at), np.float32).reshape(1, -1)
        return self._row

    def _views(self, n_logits: int, n_keys: int) -> EvalOutput:
        """Views of the last decode's output rows: logits [n_logits, n_vocab] and the key states of
        its last n_keys rows (key_source.py)."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_logits, self.n_vocab))
        if n_keys == 0:
            return EvalOutput(logits=logits, keys=self._no_keys)
        return EvalOutput(logits=logits, keys=self.key_source.rows(self._ctx, n_logits, n_keys, self.n_embd))


def eval_chunks(engine, on, tokens: np.ndarray, start: int, outputs: str, with_keys: bool, all_rows: bool):
    """Decode `tokens` at positions start.. on context holder `on` (the engine or its plain layout:
    `_batch`, `_mem`, `_decode`, `_views`) in n_batch chunks, writing the engine's key-state cache:
    (copies of the outputs of every chunk but the last, when wanted; the last chunk's size, whose
    outputs stay in `on`'s buffers)."""
    k = len(tokens)
    earlier = []
    engine.keys.truncate(start)
    keep_keys = with_keys and engine.keys.valid == start
    batch = on._batch
    for off in range(0, k, engine.n_batch):
        m = min(engine.n_batch, k - off)
        last_chunk = off + m == k
        batch.fill(tokens[off : off + m], start + off)
        batch.logits[:m] = 1 if all_rows else 0
        if last_chunk:
            batch.logits[m - 1] = 1
        rc = on._decode(batch)
        if rc != 0:  # drop whatever earlier chunks committed, keep the state consistent
            llama_cpp.llama_memory_seq_rm(on._mem, 0, start, -1)
            del engine.tokens[start:]
            engine.keys.truncate(start)
            if rc == 2 and engine._cancel.requested():
                raise Cancelled("decode cancelled")
            raise RuntimeError(f"llama_decode failed with code {rc}")
        if keep_keys:
            engine.keys.write(start + off, on._views(m, m).keys)
        if not last_chunk and outputs != "last":  # the next decode overwrites the buffers: copy
            view = on._views(m if all_rows else 1, m if with_keys else 0)
            logits = view.logits.copy() if outputs == "all" else view.logits[:0]
            earlier.append(EvalOutput(logits, view.keys.copy()))
    return earlier, m


def eval_one(engine, token: int, with_keys: bool) -> EvalOutput:
    """One token decoded at the end of the engine's own context (room checked, key states wanted
    by the caller): its logits [1, n_vocab] and key states [1, n_embd] (or [0, n_embd]), the key
    states cached. What `eval_chunks` does for one token in fewer steps: a reply's step without a
    draft, whose Python between two decodes is what we add to llama.cpp's own speed
    (`benchmarks/step_gap.py`: 0.236 -> 0.137 ms a token on the 135M)."""
    start = len(engine.tokens)
    engine.keys.truncate(start)
    engine.key_source.switch(engine._ctx, with_keys)
    batch = engine._batch
    batch.token[0], batch.pos[0], batch.logits[0] = token, start, 1
    batch.raw.n_tokens = 1
    rc = engine._decode(batch)
    if rc != 0:  # nothing of it kept, as eval_chunks does
        llama_cpp.llama_memory_seq_rm(engine._mem, 0, start, -1)
        raise RuntimeError(f"llama_decode failed with code {rc}")
    engine.tokens.append(int(token))
    if not with_keys:
        return EvalOutput(engine._one_row(), engine._no_keys)
    keys = engine.key_source.rows(engine._ctx, 1, 1, engine.n_embd)
    if engine.keys.valid == start:
        engine.keys.write(start, keys)
    return EvalOutput(engine._one_row(), keys)
