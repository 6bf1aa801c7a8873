"""The live context store: hidden states of the conversation's committed positions in an
in-memory USearch index (key = position), searched with the newest hidden state while decoding."""
from __future__ import annotations

import numpy as np

from .. import native


class ContextStore:
    def __init__(self, n_embd: int):
        self.n_embd = n_embd
        self._usearch = native.load_usearch()
        self.reset()

    def reset(self) -> None:
        self.index = self._usearch.Index(ndim=self.n_embd, metric="cos", dtype="f32")

    def __len__(self) -> int:
        return len(self.index)

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """positions: [m] int; vectors: [m, n_embd] float32 (copied)."""
        if len(positions):
            self.index.add(np.asarray(positions, np.uint64), np.ascontiguousarray(vectors, np.float32))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """query: [n_embd]. Returns (positions [k'] int64, cosine similarity [k'] float32), best first."""
        if len(self.index) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        found = self.index.search(np.ascontiguousarray(query[None, :], np.float32), min(k, len(self.index)))
        keys = np.asarray(found.keys, np.int64).reshape(-1)
        sims = 1.0 - np.asarray(found.distances, np.float32).reshape(-1)
        return keys, sims
