"""The key states of a sequence's committed positions, kept as they are evaluated.

The engine keeps one for its live sequence (a prefill with key states reuses only positions it
covers; a conversation set aside keeps a copy, kv_slots.py); the speculator keeps one with the rows
the loop hands it (what SENSE's query and its context store read).
"""
from __future__ import annotations

import numpy as np


class KeyStateCache:
    """rows [capacity, n_embd] float32: the key state of each position; positions [0, valid) are current."""

    def __init__(self, n_embd: int, capacity: int):
        self.n_embd = n_embd
        self.capacity = capacity
        self._rows: np.ndarray | None = None  # [capacity, n_embd], made on the first write
        self.valid = 0

    @property
    def started(self) -> bool:
        """Whether any row was ever written."""
        return self._rows is not None

    def write(self, start: int, rows: np.ndarray) -> None:
        """Positions start.. get `rows` [m, n_embd] (callers check `valid` reaches `start`)."""
        if self._rows is None:
            self._rows = np.zeros((self.capacity, self.n_embd), np.float32)
        self._rows[start : start + len(rows)] = rows
        self.valid = start + len(rows)

    def upto(self, n: int) -> np.ndarray | None:
        """[n, n_embd] view of positions 0..n-1, or None when some of them are not current."""
        if self._rows is None or n > self.valid:
            return None
        return self._rows[:n]

    def truncate(self, n: int) -> None:
        """Positions >= n are no longer current."""
        self.valid = min(self.valid, n)

    def copy(self) -> np.ndarray | None:
        """[valid, n_embd] a copy of the current rows (None: nothing was ever written)."""
        return None if self._rows is None else self._rows[: self.valid].copy()
