"""A draft tree grown most probable node first, from any rule that says what may follow a node."""
from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

import numpy as np

# children(handle, path_prob) -> (path_prob, tie, token, handle) for each node that may follow the node
# `handle` (None: the root, the last chosen token) whose path probability is path_prob; `tie` orders
# equally probable nodes (lower first), `handle` is what the rule is asked about that child later
Children = Callable[[object, float], Iterable[tuple[float, object, int, object]]]


def grow_best_first(children: Children, max_nodes: int, max_branches: int):
    """The `max_nodes` most probable nodes in best-first order (a parent always before its
    children), the tree kept to at most `max_branches` leaves. A child's path probability must not
    exceed its parent's. Returns (tokens [n] int32, parents [n] int32 with -1 = the root,
    path_probs [n] float32, handles [n])."""
    heap = [(-p, tie, token, handle, -1) for p, tie, token, handle in children(None, 1.0)]
    heapq.heapify(heap)
    tokens: list[int] = []
    parents: list[int] = []
    probs: list[float] = []
    handles: list[object] = []
    n_children = {-1: 0}  # chosen children per chosen node
    leaves = 0
    while heap and len(tokens) < max_nodes:
        neg_p, _, token, handle, parent = heapq.heappop(heap)
        adds_leaf = parent < 0 or n_children[parent] > 0  # else it extends a leaf
        if adds_leaf and leaves >= max_branches:
            continue
        leaves += int(adds_leaf)
        me = len(tokens)
        n_children[parent] += 1
        n_children[me] = 0
        tokens.append(token)
        parents.append(parent)
        probs.append(-neg_p)
        handles.append(handle)
        for p, tie, tok, h in children(handle, -neg_p):
            heapq.heappush(heap, (-p, tie, tok, h, me))
    return (np.asarray(tokens, np.int32), np.asarray(parents, np.int32), np.asarray(probs, np.float32), handles)
