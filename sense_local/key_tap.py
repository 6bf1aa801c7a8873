"""Reads one named tensor's rows out of a running llama.cpp graph (ggml's evaluation callback).

The key states SENSE searches with need not be the final ones: `key_tensor(layer)` names the
normalized input of block `layer` (`attn_norm-<layer>`, what that block reads), or the output norm
(`result_norm`, what the LM head reads) for layer None. A `KeyTap` installed as a context's `cb_eval`
copies that tensor's [k, n_embd] rows (every row of the micro-batch, in batch order) as soon as it
is computed; with `stop=True` it then ends the graph, so the blocks after it and the LM head never
run (indexing pays only the blocks up to the key).
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from . import native

llama_cpp = native.llama_cpp
FINAL_NORM = b"result_norm"  # the name llama.cpp's model graphs give the LM head's input


def key_tensor(layer: int | None) -> bytes:
    """The graph tensor holding the key states of `layer` (None: the final norm)."""
    return FINAL_NORM if layer is None else f"attn_norm-{layer}".encode()


def layer_name(layer: int | None) -> str:
    """How messages name a key layer: "the final norm" or "block 14"."""
    return "the final norm" if layer is None else f"block {layer}"


@functools.cache
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


def taps_available() -> bool:
    """Whether graph tensors can be read here (libggml-base found next to llama.cpp)."""
    return _load_ggml() is not None


class KeyTap:
    """An evaluation callback that copies the key tensor of `layer` into `rows` ([max_rows, n_embd]);
    `n_read` says how many rows the last decode produced (0: the tensor was not seen)."""

    def __init__(self, layer: int | None, n_embd: int, max_rows: int, *, stop: bool):
        self.layer = layer
        self.n_embd = n_embd
        self.stop = stop
        self.rows = np.zeros((max_rows, n_embd), np.float32)  # [max_rows, n_embd]
        self.n_read = 0
        self._wanted = key_tensor(layer)
        self._ggml = _load_ggml()
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)  # kept alive with self

    @property
    def usable(self) -> bool:
        return self._ggml is not None

    def _on_tensor(self, tensor, ask, user_data) -> bool:
        """Asked first whether we want a tensor, then shown it once computed; returning False after
        reading it ends the graph (stop=True)."""
        try:
            if ask:
                return self._ggml.ggml_get_name(tensor) == self._wanted
            nbytes = self._ggml.ggml_nbytes(tensor)
            n = nbytes // (4 * self.n_embd)
            if n * 4 * self.n_embd != nbytes or n > len(self.rows):
                return True  # not the f32 [k, n_embd] tensor we expect: leave the graph alone
            self._ggml.ggml_backend_tensor_get(tensor, self.rows.ctypes.data, 0, nbytes)
            self.n_read = n
            return not self.stop
        except Exception:  # an exception cannot cross into C; the row count check catches it
            return True
