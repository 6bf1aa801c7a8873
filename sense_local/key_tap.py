"""Reads one named tensor's rows out of a running llama.cpp graph (ggml's evaluation callback).

The key states SENSE searches with need not be the final ones: `key_tensor(layer)` names the
normalized input of block `layer` (`attn_norm-<layer>`, what that block reads), or the output norm
(`result_norm`, what the LM head reads) for layer None. A `KeyTap` installed as a context's `cb_eval`
copies that tensor's [k, n_embd] rows (every row of the micro-batch, in batch order) as soon as it
is computed; with `stop=True` it then ends the graph, so the blocks after it and the LM head never
run (indexing pays only the blocks up to the key). Between decodes that want no key states the tap
is switched off (`enabled`): it then asks for no tensor and the graph runs in one piece.

ggml asks the callback about every node of every decode (~900 a decode on the 1.5B), so the callback
is C (native_src/key_tap.c, compiled once into the cache with the C compiler that built llama.cpp):
a Python callback cost ~2 us a node, 10% of a 135M decode and 4% of a 1.5B one, measured
(benchmarks/decode_profile.py). Where no compiler is found the Python callback still works.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from . import native, native_build

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


class _TapState(ctypes.Structure):
    """native_src/key_tap.c's struct sense_key_tap."""

    _fields_ = [
        ("get_name", ctypes.c_void_p), ("nbytes", ctypes.c_void_p), ("tensor_get", ctypes.c_void_p),
        ("wanted", ctypes.c_char * 64), ("rows", ctypes.c_void_p), ("row_bytes", ctypes.c_int64),
        ("max_rows", ctypes.c_int64), ("n_read", ctypes.c_int64), ("enabled", ctypes.c_int32),
        ("stop", ctypes.c_int32),
    ]


@functools.cache
def native_callback():
    """The C callback (native_src/key_tap.c, built on first use: native_build.py), or None where it
    cannot be built (the Python callback serves then)."""
    lib = native_build.library("key_tap")
    if lib is None:
        return None
    return lib, llama_cpp.ggml_backend_sched_eval_callback(native_build.function_address(lib, "sense_key_tap_callback"))


class KeyTap:
    """An evaluation callback that copies the key tensor of `layer` into `rows` ([max_rows, n_embd]);
    `n_read` says how many rows the last decode produced (0: the tensor was not seen). `enabled`
    switches it on and off between decodes; `install(cparams)` makes it a context's callback."""

    def __init__(self, layer: int | None, n_embd: int, max_rows: int, *, stop: bool, native: bool = True):
        self.layer = layer
        self.n_embd = n_embd
        self.stop = stop
        self.rows = np.zeros((max_rows, n_embd), np.float32)  # [max_rows, n_embd]
        self._wanted = key_tensor(layer)
        self._ggml = _load_ggml()
        self._state = _TapState(wanted=self._wanted, rows=self.rows.ctypes.data, row_bytes=4 * n_embd,
                                max_rows=max_rows, enabled=1, stop=int(stop))
        compiled = native_callback() if native and self._ggml is not None else None
        if compiled is not None:
            self._lib, self.callback = compiled  # the library stays loaded while a tap uses it
            g = self._ggml
            self._state.get_name = ctypes.cast(g.ggml_get_name, ctypes.c_void_p).value
            self._state.nbytes = ctypes.cast(g.ggml_nbytes, ctypes.c_void_p).value
            self._state.tensor_get = ctypes.cast(g.ggml_backend_tensor_get, ctypes.c_void_p).value
            self.native = True
        else:
            self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_tensor)  # kept alive with self
            self.native = False

    @property
    def usable(self) -> bool:
        return self._ggml is not None

    @property
    def n_read(self) -> int:
        return self._state.n_read

    @n_read.setter
    def n_read(self, value: int) -> None:
        self._state.n_read = value

    @property
    def enabled(self) -> bool:
        return bool(self._state.enabled)

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._state.enabled = int(on)

    def install(self, cparams) -> None:
        """Make this tap the evaluation callback of a context about to be created with `cparams`."""
        cparams.cb_eval = self.callback
        cparams.cb_eval_user_data = ctypes.cast(ctypes.pointer(self._state), ctypes.c_void_p)

    def _on_tensor(self, tensor, ask, user_data) -> bool:
        """The Python callback, where no C compiler was found: asked first whether we want a tensor,
        then shown it once computed; returning False after reading it ends the graph (stop=True)."""
        try:
            if ask:
                return bool(self._state.enabled) and self._ggml.ggml_get_name(tensor) == self._wanted
            nbytes = self._ggml.ggml_nbytes(tensor)
            n = nbytes // (4 * self.n_embd)
            if n * 4 * self.n_embd != nbytes or n > len(self.rows):
                return True  # not the f32 [k, n_embd] tensor we expect: leave the graph alone
            self._ggml.ggml_backend_tensor_get(tensor, self.rows.ctypes.data, 0, nbytes)
            self._state.n_read = n
            return not self.stop
        except Exception:  # an exception cannot cross into C; the row count check catches it
            return True
