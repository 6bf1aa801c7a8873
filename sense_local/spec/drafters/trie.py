"""Merge retrieved continuations into a token trie and read off its heaviest path."""
from __future__ import annotations

import numpy as np


def heaviest_path(conts: np.ndarray, weights: np.ndarray, max_len: int, min_fraction: float = 0.5):
    """conts: [m, L] int32 continuations (-1 = none); weights: [m] float.

    Walks the trie of the continuations from the root, at each depth taking the child with the most
    weight among the continuations still on the path. Stops at max_len, where no continuation goes
    on, or where the best child holds no more than `min_fraction` of its parent's weight (a branch
    point a chain cannot cover). Returns (tokens [k] int32, fractions [k] float: child/parent weight,
    members [m] bool: the continuations that follow the whole path).
    """
    m, length = conts.shape
    alive = np.ones(m, bool)
    path: list[int] = []
    fractions: list[float] = []
    for depth in range(min(max_len, length)):
        col = conts[:, depth]
        ok = alive & (col >= 0)
        if not ok.any():
            break
        parent = weights[alive].sum()
        values, inverse = np.unique(col[ok], return_inverse=True)
        mass = np.bincount(inverse, weights=weights[ok])
        best = int(np.argmax(mass))
        fraction = float(mass[best] / parent) if parent > 0 else 0.0
        if depth > 0 and fraction <= min_fraction:
            break
        token = int(values[best])
        path.append(token)
        fractions.append(fraction)
        alive = ok & (col == token)
    return np.asarray(path, np.int32), np.asarray(fractions, np.float32), alive
