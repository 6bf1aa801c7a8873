"""Cut continuations out of a token stream, merge them into a token trie and read off its heaviest
path (or its most probable nodes)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .best_first import grow_best_first


def continuations(stream: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """[m, length] stream[start : start + length] for each start, -1 past the stream's end."""
    idx = starts[:, None] + np.arange(length)[None, :]
    return np.where(idx < len(stream), stream[np.minimum(idx, len(stream) - 1)], -1)


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


@dataclass
class Trie:
    """The continuations' token trie: node i holds token[i] under parent[i] (-1: the root), with the
    summed weight of the continuations through it; children[-1] are the root's."""

    token: list[int]
    parent: list[int]
    mass: list[float]
    children: dict[int, list[int]]
    total: float  # the weight of every continuation (the root's)


def build_trie(conts: np.ndarray, weights: np.ndarray, max_depth: int) -> Trie:
    """conts: [m, L] int32 (-1 = none); weights: [m] float; continuations cut to max_depth tokens."""
    rows = conts[:, :max_depth].tolist()
    w = [float(x) for x in weights]
    trie = Trie([], [], [], {-1: []}, sum(w))
    index: dict[tuple[int, int], int] = {}
    for r, row in enumerate(rows):
        at = -1
        for t in row:
            if t < 0:
                break
            node = index.get((at, t))
            if node is None:
                node = index[(at, t)] = len(trie.token)
                trie.token.append(t)
                trie.parent.append(at)
                trie.mass.append(0.0)
                trie.children[at].append(node)
                trie.children[node] = []
            trie.mass[node] += w[r]
            at = node
    return trie


def best_first_tree(conts: np.ndarray, weights: np.ndarray, acceptance: float, max_nodes: int, max_branches: int):
    """The continuations' trie, cut to its `max_nodes` most probable nodes in best-first order.

    conts: [m, L] int32 (-1 = none); weights: [m] float. A node's path probability is its
    parent's times acceptance x (the node's weight / its parent's weight): the chain estimate
    a^depth where the continuations agree, shared out among the children where they split. Nodes
    are taken most probable first (a parent always before its children) while the tree has at
    most `max_branches` leaves. Returns (tokens [n] int32, parents [n] int32 with -1 = the root,
    path_probs [n] float, non-increasing in order).
    """
    trie = build_trie(conts, weights, max_nodes)
    if not trie.token or trie.total <= 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)

    def children(node, path_prob: float):
        at = -1 if node is None else node
        parent_mass = trie.total if at < 0 else trie.mass[at]
        return [(path_prob * acceptance * trie.mass[c] / parent_mass, c, trie.token[c], c) for c in trie.children[at]]

    tokens, parents, probs, _ = grow_best_first(children, max_nodes, max_branches)
    return tokens, parents, probs
