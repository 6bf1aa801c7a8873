"""Where a context's key states come from, and switching them on for the decodes that want them.

Final-norm keys (layer None) are llama.cpp's embeddings (pooling NONE), which make it compute an
output row, and the LM head, for every position while switched on. Block keys come from a tap on the
running graph (key_tap.py), every row of every decode, with embeddings off (the LM head runs on the
output rows only). Both are switched on only for decodes that ask for key states.
"""
from __future__ import annotations

import numpy as np

from . import native
from .errors import ModelError
from .key_tap import KeyTap, native_callback

llama_cpp = native.llama_cpp


class KeySource:
    """A context's key states: `layer` None (the final norm, llama.cpp's embeddings) or a block, read
    by `tap` (None for the final norm, and for a block while no decode has wanted key states where
    only the Python tap exists)."""

    def __init__(self, layer: int | None, tap: KeyTap | None):
        self.layer = layer
        self.tap = tap
        self.embeddings_on = layer is None  # as the context is created (`configure`)
        self.used = False  # no decode has asked this context for key states yet

    @classmethod
    def make(cls, layer: int | None, n_embd: int, max_rows: int, *, tapped: bool, model_path) -> "KeySource":
        """The key source of a new context. The C tap costs nothing switched off, so every
        block-keyed context gets it; the Python one (no C compiler here) costs a call per graph node
        even then (~10% of a 135M decode, ~4% of a 1.5B one), so only contexts asked for key states
        (`tapped`) get that one."""
        tap = None
        if layer is not None and (tapped or native_callback() is not None):
            tap = KeyTap(layer, n_embd, max_rows, stop=False)
            tap.enabled = False  # on for the decodes that want key states (`switch`)
        if tap is not None and not tap.usable:
            raise ModelError(f"{model_path}: no ggml library to read block {layer}'s states from")
        return cls(layer, tap)

    def configure(self, cparams) -> None:
        """Set up the parameters of the context about to be created for these keys."""
        cparams.embeddings = self.layer is None
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        if self.tap is not None:
            self.tap.install(cparams)

    def switch(self, ctx, on: bool) -> None:
        """Key-state outputs on or off for the next decodes: for final-norm keys llama.cpp's
        embeddings (a call into llama.cpp only on change), for block keys the tap."""
        if self.tap is not None:
            self.tap.enabled = on
        on = on and self.layer is None
        if on != self.embeddings_on:
            llama_cpp.llama_set_embeddings(ctx, on)
            self.embeddings_on = on

    def before_decode(self) -> None:
        if self.tap is not None:
            self.tap.n_read = 0  # rows of an earlier decode must not pass for this one's

    def rows(self, ctx, n_outputs: int, n_rows: int, n_embd: int) -> np.ndarray:
        """[n_rows, n_embd] view of the last decode's key states, of its last n_rows rows (block keys:
        of every batch row, from the tap; final keys: of the n_outputs output rows)."""
        if self.layer is not None:
            read = self.tap.n_read if self.tap is not None else 0
            if read < n_rows:
                raise RuntimeError(f"block {self.layer}'s states: {read} rows read, {n_rows} wanted")
            return self.tap.rows[read - n_rows : read]
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(ctx), shape=(n_outputs, n_embd))
        return rows[n_outputs - n_rows :]
