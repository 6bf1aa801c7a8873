"""Key states of long token runs at plain-prefill speed or better (document indexing).

A llama.cpp context with embeddings enabled returns every position's hidden state, but measured
here it runs at ~0.8x of a plain prefill (SmolLM2 Q8_0, 512-token decodes: 607 vs 751 tok/s), and
that gap is what indexing pays. `HiddenPass` gets the same numbers another way: a second context
on the engine's model, with embeddings off and every position marked as an output, whose graph
evaluation callback (key_tap.py) copies the key tensor as soon as it is computed and then stops the
graph, so the [k, n_vocab] LM head never runs. Measured on the final norm: 712 vs 751 tok/s,
bit-identical to the embeddings path. Keyed on an earlier block, the blocks after it are skipped too.

If the callback machinery is unavailable (no ggml library found, or a model whose graph names its
tensors differently), `HiddenPass.available` is False and callers use `Engine.eval`.
"""
from __future__ import annotations

import numpy as np

from . import native
from .key_tap import KeyTap
from .token_batch import TokenBatch, context_params

llama_cpp = native.llama_cpp


class HiddenPass:
    """Evaluates token runs from position 0 on its own context; returns [k, n_embd] key states."""

    def __init__(self, model, n_embd: int, *, n_ctx: int, n_batch: int, n_threads: int, layer: int | None = None):
        self.n_embd = n_embd
        self.layer = layer  # the block whose normalized input is read (None: the final norm)
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, n_ctx)
        self.available = False  # True once a probe run read the key tensor
        self._ctx = None
        self._tap = KeyTap(layer, n_embd, self.n_batch, stop=True)
        if not self._tap.usable:
            return
        cparams = context_params(n_ctx=n_ctx, n_batch=self.n_batch, n_threads=n_threads)
        cparams.n_seq_max = 1
        cparams.embeddings = False
        self._tap.install(cparams)
        self._ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not self._ctx:
            return
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = TokenBatch(self.n_batch)
        self._batch.logits[:] = 1  # the final norm holds output rows only (blocks: see run)
        self.available = self._probe()
        if not self.available:
            self.close()  # callers fall back to Engine.eval; nothing to keep

    def _probe(self) -> bool:
        try:
            return len(self.run(np.zeros(2, np.int32))) == 2
        except RuntimeError:
            return False

    def run(self, tokens) -> np.ndarray:
        """[k, n_embd] key states of `tokens` at positions 0..k-1 (k <= n_ctx)."""
        tokens = np.asarray(tokens, dtype=np.int32)
        k = len(tokens)
        if k > self.n_ctx:
            raise ValueError(f"{k} tokens do not fit this pass's {self.n_ctx}-token context")
        out = np.empty((k, self.n_embd), np.float32)
        llama_cpp.llama_memory_clear(self._mem, True)
        for off in range(0, k, self.n_batch):
            m = min(self.n_batch, k - off)
            self._batch.fill(tokens[off : off + m], off)
            if self.layer is not None:  # a block's input holds every row anyway; one output row keeps
                # llama.cpp from copying [k, n_vocab] logits nobody reads
                self._batch.logits[:] = 0
                self._batch.logits[m - 1] = 1
            self._tap.n_read = 0
            rc = llama_cpp.llama_decode(self._ctx, self._batch.raw)
            if rc != 0 or self._tap.n_read != m:
                raise RuntimeError(f"hidden pass failed (llama_decode {rc}, {self._tap.n_read} of {m} rows read)")
            out[off : off + m] = self._tap.rows[:m]
        return out

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._batch.free()
            self._batch = None
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self.available = False
