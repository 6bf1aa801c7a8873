"""The k likeliest tokens of logits rows, fast enough to run on every decode.

np.argpartition over a 151,936-token row takes ~0.27 ms on this CPU (1% of the 1.5B's decode; 25 ms for
a 64-row tree). Instead the row is cut into G groups (token j in group j % G, so the reduction runs
over contiguous memory), each group's maximum taken, and only the k groups with the largest maxima
searched: a token among the row's k likeliest has a group maximum at least its own logit, so its
group is among those k. (Ties between groups are the exception: of many equal logits, the k
returned need not be those with the lowest ids.) 0.03 ms a row, 3 ms for 64 rows.
"""
from __future__ import annotations

import numpy as np

ROWS_PER_GROUP = 64  # tokens a group holds: ~2,400 groups for a 152k vocabulary


def top_tokens(logits: np.ndarray, k: int) -> np.ndarray:
    """logits [m, V] float -> [m, k] int32 token ids, likeliest first."""
    m, vocab = logits.shape
    k = min(k, vocab)
    groups = max(4 * k, vocab // ROWS_PER_GROUP)
    if groups * 2 > vocab:  # a small vocabulary: sort it outright
        order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return order.astype(np.int32)
    body = (vocab // groups) * groups
    grouped = logits[:, :body].reshape(m, -1, groups)  # [m, per group, G]: token j at [j // G, j % G]
    group_max = grouped.max(axis=1)  # [m, G]
    if body < vocab:  # the tail's tokens count towards group 0, whose members are searched with it
        group_max[:, 0] = np.maximum(group_max[:, 0], logits[:, body:].max(axis=1))
    best = np.argpartition(group_max, groups - k, axis=1)[:, groups - k :]  # [m, k] groups
    cand = grouped[np.arange(m)[:, None], :, best].reshape(m, -1)  # [m, k * per group]
    ids = (np.arange(grouped.shape[1])[None, None, :] * groups + best[:, :, None]).reshape(m, -1)
    if body < vocab:
        cand = np.concatenate([cand, logits[:, body:]], axis=1)
        ids = np.concatenate([ids, np.broadcast_to(np.arange(body, vocab), (m, vocab - body))], axis=1)
    part = np.argpartition(-cand, k - 1, axis=1)[:, :k]  # [m, k] the k largest, unordered
    part_ids = np.take_along_axis(ids, part, axis=1)
    # likeliest first; among equal logits the lower token id first (as np.argmax picks)
    order = np.lexsort((part_ids, -np.take_along_axis(cand, part, axis=1)), axis=1)
    return np.take_along_axis(part_ids, order, axis=1).astype(np.int32)
