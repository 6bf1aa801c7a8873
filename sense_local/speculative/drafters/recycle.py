"""Token Recycling (Luo et al., ACL 2025): the target's own candidates, kept and drafted again.

Every decode ranks the whole vocabulary at every row it computes, the rows of rejected drafts
included, and all but the chosen token are thrown away. The recycle table keeps, for each token and
for each pair of tokens, the K likeliest next tokens the target gave the last time a row read it
(V x K token ids for the tokens, 4.9 MB for a 152k vocabulary at K = 8; 2^18 hashed slots for the
pairs, 10 MB), each entry's grade (how sure the target was, how often the entry was confirmed), and
how often the target's next token was at each rank of the entry it found, per kind and grade
(decayed counts). A draft is the tree grown from the last chosen token through the table, most
probable node first, a node's path probability its parent's times its rank's hit rate.

Where the loop cuts drafts (a CPU's curve: loop.py's FILLED), it hands over only the rows that read
what the reply kept (the last token and the accepted draft tokens): a rejected chain token's row read
it in a context the reply then left, and the token's entry it overwrote spoke for that context, not
for the text that goes on. On the 1.5B's returning user without a reply history (30 conversations
through one runtime, the last ten measured, two runtimes interleaved; Intel VM), kept rows only
decoded 1.053x all rows, tau 1.326 -> 1.362, the table's tokens accepted 242 -> 275. Where trees
fill the decode, every row: there a tree's rejected nodes are the alternatives the table learns
(kept rows only, the quick suite's chat kinds under `--free-verification` fell from tau 2.37 to ~1.4).

It drafts alone (method `recycle`) or grafted onto another drafter's draft (SENSE's): the other
draft's nodes keep their estimates, the table adds alternatives beside them (at the share their
estimates leave) and continues after their ends, the token after an accepted run. The loop hands
rows over only where such drafts can pay (CANDIDATE_RATE): a GPU's curve, `--free-verification`,
a CPU whose c(2) is under ~1.62; there the trees fill the decode.

The table outlives a reply: the conversation's speculator keeps it (speculator.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...tree_layout import MAX_BRANCHES
from ..types import Draft, Feedback, RowCandidates
from .base import Drafter
from .best_first import grow_best_first

SOURCE = "recycle"
TOP_K = 8  # candidates kept per token
# An entry's grade: how sure the target was when it wrote it (its first candidate's logit over its
# second's: 0-1 | 1-2 | 2-4 | 4-8 | 8+) and how many writes in a row before it had the same first
# candidate (0 | 1 | 2 | 3+). Rank hit rates are kept per grade. On the 1.5B's plain replies to the
# quick suite's chat kinds and the returning user (4,000 rows, one runtime): a pair entry's first
# candidate was right 0.19-0.50 of the time when new (by margin), 0.82 when confirmed twice, 0.91-0.97
# three times or more; a token entry's 0.10-0.31 when new.
MARGIN_BUCKETS = (1.0, 2.0, 4.0, 8.0)
STABLE = 4  # stability levels: 0, 1, 2, 3+ confirmations
# P(the target's next token is at rank r of the entry for the token read), before any row is seen:
# the first rank's by stability (the measures above), the others' shared
FIRST_PRIOR = (0.3, 0.55, 0.8, 0.9)
RANK_PRIOR = (0.12, 0.06, 0.04, 0.03, 0.02, 0.015, 0.01)
PRIOR_WEIGHT = 20.0  # rows the prior counts as
# The loop hands rows over where a one-token draft accepted at this rate pays (c(2) under ~1.62).
# Chains of confirmed pair entries (right ~0.9 of the time) modeled on the rows above, on the
# returning user: 1.067x on the Intel VM's curve (c(2) 1.5), 1.01x on the AMD EPYC's (c(2) 1.7-1.9),
# where the table's own work would eat that: so not there (and no cost either). Measured there at
# c(2) 1.7, when the rate was 0.8 (c(2) under ~1.71) and the EPYC's curve drifted under it: `sense`
# drafted 1.08 ms a token against prompt lookup's 0.15 (the rows' top tokens and the table's
# writes each step, the grafted trees) at the same tau, 0.976x its speed (32 alternated runs of the
# quick suite's qa, translate, math and summary) and 0.95x-0.96x `ar` on those kinds in the suite.
# A GPU's curve and --free-verification open it.
CANDIDATE_RATE = 0.7
DECAY = 0.999  # per row seen: the estimate follows the text's kind over a few hundred tokens


PAIR_SLOTS = 1 << 18  # entries keyed by the last two tokens (hashed; a newer pair takes an older's slot)
# Where the loop cut the last tree, the next is grown to at most twice the nodes it verified (and
# at least GROW_MIN): where the cost curve cuts trees to a few nodes, growing 63 costs ~0.3 ms a step.
GROW_MIN = 8
UNCUT = 1 << 10  # no cap: the loop verified the whole of the last tree


def _slot(key):
    """The pair slot of key = previous * V + token (an int or an int64 array)."""
    return (key * 0x9E3779B1 >> 7) % PAIR_SLOTS


class RecycleTable:
    """The target's K likeliest next tokens after each token and after each pair of tokens, as last
    seen, each entry's grade, and each rank's hit rate by kind of entry (pair or token) and grade."""

    def __init__(self, n_vocab: int, k: int = TOP_K):
        self.n_vocab = n_vocab
        self.next = np.full((n_vocab, k), -1, np.int32)  # [V, K] token ids, likeliest first (-1: unseen)
        self.grade = np.zeros(n_vocab, np.int8)  # [V] margin bucket * STABLE + stability
        self.pair_key = np.full(PAIR_SLOTS, -1, np.int64)  # [S] previous * V + token of the slot's pair
        self.pair_next = np.full((PAIR_SLOTS, k), -1, np.int32)  # [S, K]
        self.pair_grade = np.zeros(PAIR_SLOTS, np.int8)  # [S]
        grades = (len(MARGIN_BUCKETS) + 1) * STABLE
        self.hits = np.zeros((2, grades, k), np.float64)  # [token|pair, G, K] decayed rows whose next token was at rank r
        self.seen = np.zeros((2, grades), np.float64)  # [token|pair, G] decayed rows that found such an entry
        others = (RANK_PRIOR + (0.0,) * k)[: k - 1]
        first = np.tile(FIRST_PRIOR, grades // STABLE)  # [G]
        self.prior = np.concatenate([first[:, None], np.broadcast_to(others, (grades, k - 1))], axis=1)  # [G, K]
        self.rows = 0  # rows learnt from, ever (what tells a kept copy it is behind)

    KEPT = ("next", "grade", "pair_key", "pair_next", "pair_grade", "hits", "seen")  # what a kept copy holds

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that make the table, as they are (the table goes on learning in them)."""
        return {name: getattr(self, name) for name in self.KEPT}

    @classmethod
    def from_state(cls, n_vocab: int, state) -> "RecycleTable":
        """A table learning on in a kept `state`'s arrays (a mapping of KEPT's, read from disk: taken,
        not copied); ValueError when they are not a table of this vocabulary's shape (another
        version's, another model's)."""
        table = cls(n_vocab)
        for name in cls.KEPT:
            want = getattr(table, name)
            got = state.get(name)
            if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(f"the kept recycle table's {name} is not a {want.dtype}{list(want.shape)} array")
            setattr(table, name, np.require(got, requirements=("C", "W")))
        return table

    @property
    def k(self) -> int:
        return self.next.shape[1]

    def _slots(self, previous: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = previous.astype(np.int64) * self.n_vocab + tokens
        return keys, _slot(keys)

    def add(self, candidates: RowCandidates) -> None:
        """Learn from a decode's rows: score the entry a draft would have used at each row (the
        pair's where there is one, else the token's) against the target's choice there (the row's
        first candidate), then keep the row's candidates as both entries. Rows reading a token an
        earlier row of the decode read go in a later round, so each sees the entry the one before wrote."""
        n = len(candidates.tokens)
        self.rows += n
        if n == 1 or len(set(candidates.tokens.tolist())) == n:  # distinct tokens (most steps: one row): one round
            self._add(candidates.tokens, candidates.previous, candidates.top[:, : self.k], candidates.logits)
            return
        rows = np.arange(n)
        while len(rows):
            _, first = np.unique(candidates.tokens[rows], return_index=True)
            now = rows[np.sort(first)]
            self._add(candidates.tokens[now], candidates.previous[now], candidates.top[now, : self.k],
                      candidates.logits[now])
            rows = np.setdiff1d(rows, now, assume_unique=True)

    def _add(self, tokens: np.ndarray, previous: np.ndarray, top: np.ndarray, logits: np.ndarray) -> None:
        """add() for rows that read distinct tokens."""
        keys, slots = self._slots(np.maximum(previous, 0), tokens)
        has_pair = (previous >= 0) & (self.pair_key[slots] == keys)
        old = np.where(has_pair[:, None], self.pair_next[slots], self.next[tokens])  # [m, K]
        grade = np.where(has_pair, self.pair_grade[slots], self.grade[tokens])
        known = old[:, 0] >= 0
        if known.any():
            hit = (old[known] == top[known, :1]).astype(np.float64)  # [m', K] at most one 1 per row
            kind = has_pair[known].astype(np.int64)
            self.hits *= DECAY ** len(hit)
            self.seen *= DECAY ** len(hit)
            np.add.at(self.hits, (kind, grade[known]), hit)
            np.add.at(self.seen, (kind, grade[known]), 1.0)
        margin = logits[:, 0] - logits[:, 1] if top.shape[1] > 1 else np.zeros(len(top))
        sure = np.searchsorted(MARGIN_BUCKETS, margin, side="right") * STABLE  # [m] the new grades, stability 0

        def confirmed(first: np.ndarray, grades: np.ndarray) -> np.ndarray:  # the stability the new entries keep
            return np.where(first == top[:, 0], np.minimum(grades % STABLE + 1, STABLE - 1), 0)

        token_grade = sure + confirmed(self.next[tokens, 0], self.grade[tokens])
        pair_grade = sure + np.where(has_pair, confirmed(self.pair_next[slots, 0], self.pair_grade[slots]), 0)
        self.next[tokens] = top
        self.grade[tokens] = token_grade
        with_pair = previous >= 0
        self.pair_key[slots[with_pair]] = keys[with_pair]
        self.pair_next[slots[with_pair]] = top[with_pair]
        self.pair_grade[slots[with_pair]] = pair_grade[with_pair]

    def entry(self, previous: int, token: int) -> tuple[list[int], int, int]:
        """(the candidates after `token` read after `previous` (-1: unknown), the entry's kind
        (0 token, 1 pair), its grade)."""
        if previous >= 0:
            key = previous * self.n_vocab + token
            slot = _slot(key)
            if self.pair_key[slot] == key:
                return self.pair_next[slot].tolist(), 1, int(self.pair_grade[slot])
        return self.next[token].tolist(), 0, int(self.grade[token])

    def rank_probs(self) -> np.ndarray:
        """[2, G, K] P(the next token is at rank r of an entry of kind k and grade g), non-increasing in r."""
        probs = (self.hits + self.prior * PRIOR_WEIGHT) / (self.seen[..., None] + PRIOR_WEIGHT)
        return np.minimum.accumulate(probs, axis=2)  # a later rank never above an earlier one


@dataclass
class Graft:
    """The key of a draft the table grew around another drafter's: which nodes are that draft's."""

    base: Draft | None  # the other drafter's draft (None: the table's alone)
    base_node: np.ndarray  # [n] the base draft's node index of each node, -1 for the table's own


def recycled_tree(table: RecycleTable, last: int, max_nodes: int, base: Draft | None = None,
                  max_branches: int = MAX_BRANCHES, previous: int = -1) -> Draft | None:
    """The tree grown after `last` (read after `previous`; -1: unknown) from the table, around
    `base` (a chain or tree of another drafter, whose nodes keep their path probabilities); None
    when it has no node."""
    probs = table.rank_probs().tolist()  # [2][G][K]
    if base is not None:
        b_tokens = base.tokens.tolist()
        b_parents = list(range(-1, len(b_tokens) - 1)) if base.parents is None else base.parents.tolist()
        b_probs = (np.minimum(base.acceptance, 0.999) ** np.arange(1, len(b_tokens) + 1)
                   if base.path_probs is None else base.path_probs).tolist()
        b_children: dict[int, list[int]] = {}
        for i, p in enumerate(b_parents):
            b_children.setdefault(p, []).append(i)

    def recycled(before: int, token: int, path_prob: float, exclude: set[int]):
        found, kind, grade = table.entry(before, token)
        p = probs[kind][grade]
        return [(path_prob * p[r], (1, r), t, ("r", token, t)) for r, t in enumerate(found)
                if t >= 0 and t not in exclude]

    def children(handle, path_prob: float):
        if handle is None:
            handle = ("b", -1) if base is not None else ("r", previous, last)
        if handle[0] == "r":
            return recycled(handle[1], handle[2], path_prob, set())
        at = handle[1]
        own = b_children.get(at, [])  # the base's children: their own estimates
        mine = [(b_probs[i], (0, i), b_tokens[i], ("b", i)) for i in own]
        left = max(0.0, 1.0 - sum(b_probs[i] for i in own) / path_prob) if path_prob > 0 else 0.0  # the base's leftover
        token = last if at < 0 else b_tokens[at]
        before = previous if at < 0 else last if b_parents[at] < 0 else b_tokens[b_parents[at]]
        return mine + recycled(before, token, path_prob * left, {b_tokens[i] for i in own})

    tokens, parents, path_probs, handles = grow_best_first(children, max_nodes, max_branches)
    if len(tokens) == 0:
        return None
    base_node = np.asarray([h[1] if h[0] == "b" else -1 for h in handles], np.int32)
    if base is not None and (base_node >= 0).all():  # the table added nothing: the base as it was
        return base.first(len(tokens))
    sources = tuple(base.source_of(int(i)) if i >= 0 else SOURCE for i in base_node) if base is not None else None
    source = base.source if base is not None and base_node[0] >= 0 else SOURCE
    if sources is not None and all(s == source for s in sources):
        sources = None
    # a chain's estimate where only its main path is verified (sampling): the base's, else the first node's
    acceptance = base.acceptance if base is not None else float(path_probs[0])
    return Draft(tokens, source, acceptance, Graft(base, base_node), parents, path_probs, sources)


def base_feedback(feedback: Feedback) -> Feedback | None:
    """How the base draft of a recycled tree fared: its nodes form the start of every path, so it
    accepted the path's first base nodes and drafted one more where it had a child verified there.
    Where no node of it was verified, its first token is scored against the target's (as the loop
    scores a draft it did not verify). None: no base, or nothing known."""
    draft, graft = feedback.draft, feedback.draft.key
    base_node = graft.base_node[: len(draft.tokens)]
    if graft.base is None:
        return None
    if not (base_node >= 0).any():
        if feedback.first_token < 0:
            return None
        base = graft.base
        return Feedback(base.first(1), int(base.tokens[0] == feedback.first_token), first_token=feedback.first_token)
    path = feedback.path.tolist() if feedback.path is not None else list(range(feedback.accepted))
    parents = draft.parents if draft.parents is not None else np.arange(-1, len(draft.tokens) - 1)
    accepted = 0
    while accepted < len(path) and base_node[path[accepted]] >= 0:
        accepted += 1
    at = path[accepted - 1] if accepted else -1
    drafted = accepted + int(((parents == at) & (base_node >= 0)).any())
    return Feedback(graft.base, accepted, drafted)


class GrowthCap:
    """How many nodes the next tree is grown to: no cap while the loop verifies whole trees, else
    what it verified of the last one, doubled."""

    def __init__(self):
        self.nodes = UNCUT
        self.grown = 0  # nodes of the latest tree proposed

    def tree(self, draft: Draft | None) -> Draft | None:
        self.grown = 0 if draft is None else len(draft.tokens)
        return draft

    def verified(self, feedback: Feedback) -> None:
        n = len(feedback.draft.tokens)
        self.nodes = UNCUT if n >= self.grown else max(GROW_MIN, 2 * n)


class RecycleDrafter(Drafter):
    """Token Recycling alone: the table's tree after the last token (`recycle`)."""

    name = SOURCE
    candidates = TOP_K
    candidate_rate = CANDIDATE_RATE

    def __init__(self, table: RecycleTable):
        self.table = table
        self.recent = [-1, -1]  # the last two tokens (-1: none)
        self.handed = False  # the loop hands this reply's rows over (it drafts only then)
        self.cap = GrowthCap()

    def begin(self, prompt: Sequence[int]) -> None:
        self.recent = [-1, -1]
        self.handed = False
        self.extend(prompt[-2:])

    def extend(self, tokens: Sequence[int]) -> None:
        self.recent = (self.recent + [int(t) for t in tokens[-2:]])[-2:]

    def add_candidates(self, candidates: RowCandidates) -> None:
        self.table.add(candidates)
        self.handed = True

    def propose(self, max_len: int) -> Draft | None:
        before, last = self.recent
        if last < 0 or not self.handed:
            return None
        return self.cap.tree(recycled_tree(self.table, last, min(max_len, self.cap.nodes), previous=before))

    def update(self, feedback: Feedback) -> None:
        self.cap.verified(feedback)
