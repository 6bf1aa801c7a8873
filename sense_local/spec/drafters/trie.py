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
    m and L are small (<= 2k neighbours, <= 32 tokens), so plain Python over lists is fastest here.
    """
    rows = conts[:, :max_len].tolist()
    w = [float(x) for x in weights]
    alive = list(range(len(rows)))
    path: list[int] = []
    fractions: list[float] = []
    for depth in range(min(max_len, conts.shape[1])):
        parent = sum(w[i] for i in alive)
        mass: dict[int, float] = {}
        for i in alive:
            t = rows[i][depth]
            if t >= 0:
                mass[t] = mass.get(t, 0.0) + w[i]
        if not mass or parent <= 0:
            break
        token, best = max(mass.items(), key=lambda kv: kv[1])
        fraction = best / parent
        if depth > 0 and fraction <= min_fraction:
            break
        path.append(token)
        fractions.append(fraction)
        alive = [i for i in alive if rows[i][depth] == token]
    members = np.zeros(len(rows), bool)
    members[alive] = True
    return np.asarray(path, np.int32), np.asarray(fractions, np.float32), members
