"""Saved KV states of conversations the context moved away from, so that one interleaved with other
requests resumes where it was instead of evaluating its prompt again.

The context holds one conversation (sequence 0). When a prompt would throw away many of its
evaluated tokens (another client's request, a title request between two turns, a second TUI
session), the engine first saves that sequence's state (llama.cpp's `llama_state_seq_get_data`: its
KV entries, plus the key states SENSE keeps of it) here. A later prompt that starts with more of a
saved conversation's tokens than of the live one gets that state back (`llama_state_seq_set_data`)
and evaluates only what follows. Like llama-server's slots, without fixing their number: the states
share a byte cap and the least recently used go first.

Cost: a state is the KV of its tokens, ~28 KB per token on Qwen2.5-1.5B (f16, 28 layers, 2 KV heads
of 128), so a 2,000-token conversation is ~57 MB, saved or restored in tens of milliseconds.
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MIB = 512  # RAM for saved states, at most
SAVE_MIN = 64  # a prompt that would throw away at least this many evaluated tokens saves them first
SWITCH_MIN = 32  # a saved state is restored when it holds this many more of the prompt than the live one


@dataclass
class SavedState:
    tokens: list[int]  # the sequence's committed tokens
    data: np.ndarray  # [n] uint8: its state as llama_state_seq_get_data wrote it
    keys: np.ndarray  # [n_keys, n_embd] key states of its first n_keys positions (a copy)

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.keys.nbytes

    def common(self, prompt: np.ndarray) -> int:
        """Leading tokens of `prompt` this state holds."""
        return common_prefix(self.tokens, prompt)


def byte_pointer(data: np.ndarray):
    """`data` (uint8, contiguous) as the uint8_t * llama.cpp's state calls take."""
    return data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


def common_prefix(held: Sequence[int], prompt: np.ndarray) -> int:
    """How many leading tokens of `prompt` (int32) `held` has, in order."""
    n = min(len(held), len(prompt))
    diff = np.flatnonzero(np.asarray(held[:n], np.int32) != prompt[:n])
    return int(diff[0]) if len(diff) else n


class KvSlots:
    def __init__(self, cap_bytes: int = DEFAULT_MIB << 20):
        self.cap_bytes = cap_bytes
        self._states: list[SavedState] = []  # least recently used first

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._states)

    def __len__(self) -> int:
        return len(self._states)

    def best(self, prompt: Sequence[int], *, keys: bool) -> tuple[SavedState | None, int]:
        """The saved state holding the longest start of `prompt` (only positions with key states
        count when `keys`), and that length."""
        prompt = np.asarray(prompt, np.int32)
        best, best_n = None, 0
        for state in self._states:
            n = state.common(prompt)
            if keys:
                n = min(n, len(state.keys))
            if n > best_n:
                best, best_n = state, n
        return best, best_n

    def add(self, state: SavedState) -> None:
        """Keep `state`; states it holds whole (a start of its tokens) go, then the oldest over the cap."""
        if state.nbytes > self.cap_bytes:
            return
        self._states = [s for s in self._states if not _holds(state, s)]
        self._states.append(state)
        while self.nbytes > self.cap_bytes:
            self._states.pop(0)

    def take(self, state: SavedState) -> None:
        """`state` is live again: it leaves the saved ones (if it was one)."""
        self._states = [s for s in self._states if s is not state]

    def clear(self) -> None:
        self._states.clear()


def _holds(new: SavedState, old: SavedState) -> bool:
    """Does `new` hold all that `old` does: its tokens, and key states as far?"""
    n = len(old.tokens)
    return n <= len(new.tokens) and len(old.keys) <= len(new.keys) and new.tokens[:n] == old.tokens
