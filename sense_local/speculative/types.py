"""Data handed between drafter, verifier and loop (shapes in comments)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TARGET = "target"  # provenance of a token the target chose itself


@dataclass
class Draft:
    """A proposed continuation after the last chosen token (the draft alone, never the prefix).

    A chain (parents None) is tokens in order. A tree has node i hanging under node parents[i]
    (-1: under the last chosen token), nodes in best-first order: every parent comes before its
    children, so any first-n nodes form a tree, and path_probs never grows along a path.
    """

    tokens: np.ndarray  # [k] int32
    source: str  # drafter / datastore that proposed it, e.g. "pld", "rest", "context", "docs"
    acceptance: float  # drafter's estimate of P(next draft token accepted | previous accepted)
    key: object = None  # drafter-private handle returned in Feedback (e.g. which n-gram matched)
    parents: np.ndarray | None = None  # [k] int32 parent node of each node (-1 = root); None: a chain
    path_probs: np.ndarray | None = None  # [k] float estimated P(root..node all accepted); a tree's, or a
    # chain's whose tokens differ in how sure they are (None: a chain of `acceptance` ** i)
    sources: tuple[str, ...] | None = None  # [k] each node's source where they differ (None: all `source`)
    geometric: bool = False  # a chain whose path_probs are path_probs[0] * acceptance ** i, lowered from a token
    # its drafter doubts on (pld: past a copy's stop): path_probs[0] is the drafter's usual first-token chance,
    # estimated apart from the run, not a doubt about this token (cost.chain_floor, best_chain_size's head_usual)

    def source_of(self, node: int) -> str:
        return self.source if self.sources is None else self.sources[node]

    def first(self, n: int) -> "Draft":
        """The draft cut to its first n tokens (nodes); a tree that is a single path becomes a chain."""
        sources = None if self.sources is None else self.sources[:n]
        if self.parents is None:
            probs = None if self.path_probs is None else self.path_probs[:n]
            return Draft(self.tokens[:n], self.source, self.acceptance, self.key, None, probs, sources, self.geometric)
        parents = self.parents[:n]
        if np.array_equal(parents, np.arange(-1, n - 1)):
            return Draft(self.tokens[:n], self.source, self.acceptance, self.key, sources=sources)
        return Draft(self.tokens[:n], self.source, self.acceptance, self.key, parents, self.path_probs[:n], sources)

    def to_end(self, is_eog) -> "Draft":
        """The draft without what follows an end-of-generation token (nothing after one can be
        emitted): a chain cut after its first, a tree without the nodes below one. A copy of a
        prompt's last lines runs on into the chat template's closing tokens and the reply's own
        start; drafted whole (31 tokens at a copy's 0.99 estimate), the last step of a reply that
        ends its copy verified 31 tokens to keep 1 (code-shlex.quote, the 1.5B)."""
        stops = [is_eog(t) for t in self.tokens.tolist()]
        if self.parents is None:
            return next((self.first(i + 1) for i, stop in enumerate(stops) if stop and i + 1 < len(stops)), self)
        dead = np.zeros(len(stops), bool)  # below an end-of-generation node
        for i, p in enumerate(self.parents.tolist()):
            dead[i] = p >= 0 and (dead[p] or stops[p])
        if not dead.any():
            return self
        keep = np.flatnonzero(~dead)
        index = np.full(len(stops) + 1, -1, np.int32)  # old parent (+1) -> new parent; -1 stays the root
        index[keep + 1] = np.arange(len(keep))
        sources = None if self.sources is None else tuple(self.sources[i] for i in keep)
        return Draft(self.tokens[keep], self.source, self.acceptance, self.key, index[self.parents[keep] + 1],
                     self.path_probs[keep], sources)

    def main_path(self) -> "Draft":
        """A tree's most probable path as a chain (a chain is returned as it is)."""
        if self.parents is None:
            return self
        nodes, at = [], -1
        for i, p in enumerate(self.parents.tolist()):  # best-first: a node's first child is its best
            if p == at:
                nodes.append(i)
                at = i
        sources = None if self.sources is None else tuple(self.sources[i] for i in nodes)
        return Draft(self.tokens[nodes], self.source, self.acceptance, self.key, sources=sources)


@dataclass
class CommittedKeys:
    """Key states of positions a decode committed, handed by the loop to a drafter that searches
    with them (`Drafter.add_keys`): row i is the key state at position start + i, the state that
    chose the token at start + i + 1. A copy the drafter may keep is its own to make: the rows are
    the engine's views, valid until its next decode."""

    start: int  # position of the first row
    rows: np.ndarray  # [m, n_embd] float32


@dataclass
class RowCandidates:
    """The target's likeliest next tokens at the rows of a decode, handed by the loop to a drafter
    that recycles them (`Drafter.add_candidates`; Token Recycling): row i read token tokens[i] after
    previous[i] and ranked top[i] as what comes next, its own greedy choice first."""

    tokens: np.ndarray  # [m] int32 the token each row read
    previous: np.ndarray  # [m] int32 the token before it (-1: unknown)
    top: np.ndarray  # [m, K] int32 the row's K likeliest next tokens, likeliest first
    logits: np.ndarray  # [m, K] float32 their logits


@dataclass
class Verdict:
    """What the acceptance rule decided for one draft.

    accepted: the length of the accepted draft prefix.
    next_token: the target's own token after that prefix (the bonus token when all were accepted,
        the correction otherwise).
    soft: [accepted] bool, True where a token was accepted by a relaxed rule rather than identity.
    path: for a tree draft, the accepted nodes from the root down.
    """

    accepted: int
    next_token: int
    soft: np.ndarray | None = None  # [accepted] bool
    path: np.ndarray | None = None  # [accepted] int node indices (tree drafts only)


@dataclass
class Feedback:
    """How a verified draft fared. drafted: the draft tokens on the path the target took (a chain's
    length; for a tree, the accepted path plus the rejected child it had, if any)."""

    draft: Draft
    accepted: int
    drafted: int = -1  # -1: len(draft.tokens)
    path: np.ndarray | None = None  # [accepted] int the accepted nodes from the root down (trees only)
    first_token: int = -1  # the target's token right after the last chosen one (-1: unknown)
    next_token: int = -1  # the token emitted right after the accepted part (-1: not known yet, a shadow's)

    def __post_init__(self):
        if self.drafted < 0:
            self.drafted = len(self.draft.tokens)


@dataclass
class TokenEvent:
    """One emitted token and where it came from."""

    token: int
    text: str  # newly completed text (UTF-8 safe; may be empty mid-character)
    source: str  # TARGET or the draft's source
    soft: bool = False
    logprob: object = None  # logprobs.TokenLogprob when the reply asked for log-probabilities
    more: bool = False  # more tokens of the same forward follow at once (a verified draft's, then its bonus)


@dataclass
class GenerationStats:
    method: str
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV entries were reused, not evaluated again
    tokens: int = 0  # generated tokens
    forwards: int = 0  # target decode calls that produced generated tokens (prefill counts once)
    drafted: int = 0  # draft tokens sent to verification
    accepted: int = 0  # draft tokens accepted
    soft_accepted: int = 0  # tokens the soft rule took: in verified drafts, or at the bonus row (loop._bonus)
    steps_with_draft: int = 0
    t_prefill: float = 0.0
    t_draft: float = 0.0
    t_verify: float = 0.0
    t_total: float = 0.0  # wall time after the prefill (which also yields the first token), less the
    #                       time spent recording top2_gaps (the bench's measuring, not the reply's work)
    stop_reason: str = ""
    prediction_accepted: int = 0  # Predicted Outputs: prediction tokens the output followed
    prediction_rejected: int = 0  # and the prediction's other tokens
    top2_gaps: list[float] = field(default_factory=list)  # per generated token, when recorded
    drafted_by_source: dict[str, int] = field(default_factory=dict)  # draft tokens verified, per draft source

    @property
    def tau(self) -> float:
        """Mean tokens per target forward (Spec-Bench's mean accepted tokens; 1.0 for plain decoding)."""
        return self.tokens / self.forwards if self.forwards else 0.0

    @property
    def tok_per_s(self) -> float:
        """Decode speed: tokens after the first / time after the first (llama-bench's tg; prefill apart)."""
        return (self.tokens - 1) / self.t_total if self.tokens > 1 and self.t_total > 0 else 0.0

    @property
    def t_other(self) -> float:
        return max(0.0, self.t_total - self.t_draft - self.t_verify)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "tokens": self.tokens,
            "forwards": self.forwards,
            "tau": round(self.tau, 4),
            "tok_per_s": round(self.tok_per_s, 2),
            "drafted": self.drafted,
            "accepted": self.accepted,
            "soft_accepted": self.soft_accepted,
            "time": {
                "prefill": round(self.t_prefill, 4),
                "draft": round(self.t_draft, 4),
                "verify": round(self.t_verify, 4),
                "other": round(self.t_other, 4),
                "total": round(self.t_total, 4),
            },
            "stop_reason": self.stop_reason,
            "prediction": {"accepted": self.prediction_accepted, "rejected": self.prediction_rejected},
            "drafted_by_source": dict(self.drafted_by_source),
        }
