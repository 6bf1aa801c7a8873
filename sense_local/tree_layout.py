"""How a tree draft is laid out in the KV cache for one batched verification (Engine.eval_tree):
one sequence per leaf, each node in the sequences of every leaf below it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TREE_SEQ0 = 2  # the first sequence id of a tree draft's branches
# leaves a tree draft may have: Token Recycling's trees are wide (drafters/recycle.py: on the 1.5B
# under --free-verification, tau 1.43 with 8 leaves, 1.76 with 32, 1.79 with 63; one run each). The
# context's n_seq_max follows (34, was 10): plain decoding alternated in one process, 32 over 8
# leaves, ran 1.010x (135M, 18 replies) and 1.015x (1.5B, 12).
MAX_BRANCHES = 32
MAX_TREE = 64  # nodes a tree draft may have


@dataclass
class PendingTree:
    """A tree evaluated whose accepted path is not kept yet."""

    start: int  # position of the tree's root (the last chosen token)
    branch_of: list[int]  # [n] a sequence id holding each node
    n_branches: int


@dataclass
class TreeLayout:
    depth: np.ndarray  # [n] int32 depth of each node (0: a child of the root)
    seqs: list[list[int]]  # [n] the sequence ids each node belongs to (its own leaf's first)
    n_branches: int  # leaves, each the sequence TREE_SEQ0 + its index

    @property
    def max_depth(self) -> int:
        return int(self.depth.max(initial=0))


def tree_layout(parents: np.ndarray) -> TreeLayout:
    """parents: [n] int (-1: under the root; a parent before its children). Raises ValueError for a
    tree over MAX_TREE nodes or MAX_BRANCHES leaves."""
    n = len(parents)
    if n > MAX_TREE:
        raise ValueError(f"a tree draft has at most {MAX_TREE} nodes (got {n})")
    depth = np.zeros(n, np.int32)
    has_child = np.zeros(n, bool)
    for i, p in enumerate(parents.tolist()):
        if p >= 0:
            depth[i] = depth[p] + 1
            has_child[p] = True
    leaves = np.flatnonzero(~has_child).tolist()
    if len(leaves) > MAX_BRANCHES:
        raise ValueError(f"a tree draft has at most {MAX_BRANCHES} leaves (got {len(leaves)})")
    seqs: list[list[int]] = [[] for _ in range(n)]
    for b, leaf in enumerate(leaves):
        i = leaf
        while i >= 0:
            seqs[i].append(TREE_SEQ0 + b)
            i = int(parents[i])
    return TreeLayout(depth, seqs, len(leaves))
