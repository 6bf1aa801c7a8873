"""Final hidden states of long token runs at plain-prefill speed (document indexing).

A llama.cpp context with embeddings enabled returns every position's hidden state, but measured
here it runs at ~0.8x of a plain prefill (SmolLM2 Q8_0, 512-token decodes: 607 vs 751 tok/s), and
that gap is what indexing pays. `HiddenPass` gets the same numbers another way: a second context
on the engine's model, with embeddings off and every position marked as an output, whose graph
evaluation callback copies the output-norm tensor (`result_norm`, the state the LM head reads) as
soon as it is computed and then stops the graph, so the [k, n_vocab] LM head never runs. Measured:
712 vs 751 tok/s, bit-identical to the embeddings path.

If the callback machinery is unavailable (no ggml library found, or a model whose graph names its
final norm differently), `HiddenPass.available` is False and callers use `Engine.eval`.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import native
from .token_batch import TokenBatch, context_params

llama_cpp = native.llama_cpp
FINAL_NORM = b"result_norm"  # the name llama.cpp's model graphs give the LM head's input


def _load_ggml():
    """libggml-base (tensor names, sizes and reads), or None where it cannot be found."""
    try:
        from llama_cpp._ctypes_extensions import load_shared_library

        lib = load_shared_library("ggml-base", Path(llama_cpp.__file__).parent / "lib")
    except (ImportError, OSError, RuntimeError, FileNotFoundError):
        return None
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return lib


class HiddenPass:
    """Evaluates token runs from position 0 on its own context; returns [k, n_embd] hidden states."""

    def __init__(self, model, n_embd: int, *, n_ctx: int, n_batch: int, n_threads: int):
        self.n_embd = n_embd
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, n_ctx)
        self.available = False  # True once a probe run read the final norm
        self._ggml = _load_ggml()
        self._ctx = None
        self._rows = np.zeros((self.n_batch, n_embd), np.float32)  # [n_batch, n_embd] filled by the callback
        self._rows_read = 0
        self._callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)  # kept alive with self
        if self._ggml is None:
            return
        cparams = context_params(n_ctx=n_ctx, n_batch=self.n_batch, n_threads=n_threads)
        cparams.n_seq_max = 1
        cparams.embeddings = False
        cparams.cb_eval = self._callback
        self._ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not self._ctx:
            return
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = TokenBatch(self.n_batch)
        self._batch.logits[:] = 1  # every row is an output
        self.available = self._probe()
        if not self.available:
            self.close()  # callers fall back to Engine.eval; nothing to keep

    def _on_tensor(self, tensor, ask, user_data) -> bool:
        """ggml's eval callback: asked first whether we want a tensor, then shown it once computed;
        returning False after reading the final norm ends the graph (the LM head is skipped)."""
        try:
            if ask:
                return self._ggml.ggml_get_name(tensor) == FINAL_NORM
            nbytes = self._ggml.ggml_nbytes(tensor)
            rows = nbytes // (4 * self.n_embd)
            if rows * 4 * self.n_embd != nbytes or rows > len(self._rows):
                return True  # not the f32 [k, n_embd] tensor we expect: leave the graph alone
            self._ggml.ggml_backend_tensor_get(tensor, self._rows.ctypes.data, 0, nbytes)
            self._rows_read = rows
            return False
        except Exception:  # an exception cannot cross into C; the row count check catches it
            return True

    def _probe(self) -> bool:
        try:
            return len(self.run(np.zeros(2, np.int32))) == 2
        except RuntimeError:
            return False

    def run(self, tokens) -> np.ndarray:
        """[k, n_embd] final hidden states of `tokens` at positions 0..k-1 (k <= n_ctx)."""
        tokens = np.asarray(tokens, dtype=np.int32)
        k = len(tokens)
        if k > self.n_ctx:
            raise ValueError(f"{k} tokens do not fit this pass's {self.n_ctx}-token context")
        out = np.empty((k, self.n_embd), np.float32)
        llama_cpp.llama_memory_clear(self._mem, True)
        for off in range(0, k, self.n_batch):
            m = min(self.n_batch, k - off)
            self._batch.fill(tokens[off : off + m], off)
            self._rows_read = 0
            rc = llama_cpp.llama_decode(self._ctx, self._batch.raw)
            if rc != 0 or self._rows_read != m:
                raise RuntimeError(f"hidden pass failed (llama_decode {rc}, {self._rows_read} of {m} rows read)")
            out[off : off + m] = self._rows[:m]
        return out

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._batch.free()
            self._batch = None
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self.available = False
