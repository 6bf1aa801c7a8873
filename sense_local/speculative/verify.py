"""Acceptance rules: given the target's logits at each draft position, how much of a draft stands.

Terms. For a draft d[0..k-1] proposed after the last chosen token t, the target decodes
[t, d0, ..., d(k-1)] in one batch and returns logits L[0..k] ([k+1, V]); row i is the target's
distribution p_i for the token after d(i-1) (after t for i = 0).
  accepted    the length n of the draft prefix that stands;
  next token  the target's own token at row n: the *bonus* token when n = k, the *recovered*
              (correction) token when n < k.
Both rules below are lossless: `exact` reproduces greedy decoding (up to the near-ties of batched
arithmetic), `sampling` reproduces sampling from p (speculative sampling with a deterministic draft,
q = onehot(d_i): accept d_i with probability p_i(d_i), else draw from norm((p_i - q)+)).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import Verdict


def verify_exact(logits: np.ndarray, draft: np.ndarray) -> Verdict:
    """Greedy rule. logits: [k+1, V]; draft: [k]. Accept while d_i == argmax p_i."""
    targets = logits.argmax(axis=1)  # [k+1]
    k = len(draft)
    mismatches = np.flatnonzero(targets[:k] != draft)
    n = int(mismatches[0]) if len(mismatches) else k
    return Verdict(accepted=n, next_token=int(targets[n]))


def softmax(row: np.ndarray, temperature: float) -> np.ndarray:
    """[V] float64 probabilities of softmax(row / temperature)."""
    z = row.astype(np.float64) / temperature
    z -= z.max()
    np.exp(z, out=z)
    z /= z.sum()
    return z


@dataclass(frozen=True)
class Truncation:
    """Which tokens sampling may draw, applied to p = softmax(logits / temperature) in vLLM's order
    (temperature first): top_k (0: all), top_p (1: all; the smallest set of most likely tokens
    holding that much mass), min_p (0: all; tokens at least min_p times the likeliest one's
    probability). Speculative sampling verifies against the truncated p, so it stays lossless."""

    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self):
        from ..errors import SenseError

        if not (isinstance(self.top_k, int) and self.top_k >= 0):
            raise SenseError(f"top_k must be an integer of 0 or more (got {self.top_k!r})")
        if not 0.0 < self.top_p <= 1.0:
            raise SenseError(f"top_p must be above 0 and at most 1 (got {self.top_p!r})")
        if not 0.0 <= self.min_p < 1.0:
            raise SenseError(f"min_p must be from 0 to below 1 (got {self.min_p!r})")

    @property
    def active(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        """p [V] probabilities, truncated and renormalised in place."""
        if self.top_k > 0 and self.top_k < len(p):
            kth = np.partition(p, -self.top_k)[-self.top_k]
            p[p < kth] = 0.0
        if self.top_p < 1.0:
            order = np.argsort(-p)  # ~5 ms on 151,936 entries: sampling at top_p < 1 only
            mass = np.cumsum(p[order])
            cut = int(np.searchsorted(mass, self.top_p * mass[-1])) + 1
            p[order[cut:]] = 0.0
        if self.min_p > 0.0:
            p[p < self.min_p * p.max()] = 0.0
        p /= p.sum()
        return p


NO_TRUNCATION = Truncation()


def sample_from(p: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def distribution(row: np.ndarray, temperature: float, truncation: Truncation = NO_TRUNCATION) -> np.ndarray:
    """[V] float64: the distribution sampling draws from, softmax(row / temperature) truncated."""
    p = softmax(row, temperature)
    return truncation.apply(p) if truncation.active else p


def verify_sampling(
    logits: np.ndarray, draft: np.ndarray, temperature: float, rng: np.random.Generator,
    truncation: Truncation = NO_TRUNCATION,
) -> Verdict:
    """Speculative sampling with a deterministic draft. logits: [k+1, V]; draft: [k]."""

    def dist(row: np.ndarray) -> np.ndarray:
        return distribution(row, temperature, truncation)

    for i, x in enumerate(draft):
        p = dist(logits[i])
        if rng.random() < p[x]:
            continue
        p[x] = 0.0  # (p - onehot(x))+ : the rest of the mass, renormalised by sample_from
        return Verdict(accepted=i, next_token=sample_from(p, rng))
    return Verdict(accepted=len(draft), next_token=sample_from(dist(logits[len(draft)]), rng))


@dataclass(frozen=True)
class SoftOptions:
    """Parameters of the soft gate, all in one place.

    theta          accept a non-top draft token when gate >= theta; theta >= 1 is the exact rule.
    w_prob         weight of r = p(x) / p(top), the target's own preference for the draft token.
    w_embed        weight of cos(E[x], E[top]) in the model's token-embedding space.
    w_support      weight of the retrieval's support for the draft (the drafter's acceptance estimate).
    min_prob_ratio r below this is never accepted, whatever the other terms say.
    max_entropy    above this entropy (nats) the target is unsure of everything: exact only.
    min_support    a draft the drafter gives less than this acceptance estimate gets no soft
                   acceptance: its tokens are guesses, not a copy (see below).
    confirm        a soft acceptance inside a draft stands only when the target then takes the next
                   `confirm` draft tokens as its own top tokens: the substitution must lead into the
                   draft's continuation. At the bonus row (loop.py) nothing follows to confirm it:
                   min_support is its guard there.
    """

    # Measured on Qwen2.5-Coder-1.5B (quick suite, grounded + docqa, every soft acceptance logged).
    # Without min_support and confirm, docqa took 19 soft acceptances (mostly at the bonus row, with
    # support 0.14-0.45: a neighbour's guess at free text, one token long) and its mean log-prob fell
    # to -0.347 (with no soft acceptance at all: -0.319; ar -0.270); the grounded tasks' 6 had support
    # 0.70-0.92 and each led into a quote the target then followed (tau 10.11). With support >= 0.7
    # and one confirming token: docqa 0 soft acceptances (-0.319, exact decoding's own), grounded the
    # same 6 (tau 10.69, chrF vs ar 83.6). Confirming 2 tokens cost grounded its speed (tau 6.74).
    # Two of docqa's four tasks part from ar at near-ties (top-2 gap 0.02 and 0.18) under any
    # batched decoding, exact included: that, not soft acceptance, is what separates -0.319 from
    # ar's -0.270. theta (before the two guards, which left grounded alone): 0.2 gave grounded 3.73x
    # at chrF 83.6 (2-rep quick suite); 0.35 3.19x at 86.1; 0.5 2.18x at 89.2. Below 0.2 the floors
    # decide (r >= 0.1, entropy <= 3.5).
    theta: float = 0.2
    w_prob: float = 0.45
    w_embed: float = 0.35
    w_support: float = 0.2
    min_prob_ratio: float = 0.1
    max_entropy: float = 3.5
    min_support: float = 0.7
    confirm: int = 1

    def __post_init__(self):
        from ..errors import SenseError

        if not 0.0 <= self.theta <= 1.0:
            raise SenseError(f"--theta must be between 0 and 1 (got {self.theta})")


def soft_gate(prob_ratio: float, entropy: float, embed_sim: float, support: float, opts: SoftOptions) -> float:
    """The gate in [0, 1] for a draft token x that is not the target's top token.

    gate = w_prob * r + w_embed * max(cos, 0) + w_support * support, where r = p(x) / p(top), cos is
    the cosine of the two tokens' embeddings and support in [0, 1] is the retrieval's confidence;
    0 when r < min_prob_ratio, support < min_support or the distribution's entropy exceeds max_entropy.
    """
    if prob_ratio < opts.min_prob_ratio or entropy > opts.max_entropy or support < opts.min_support:
        return 0.0
    gate = opts.w_prob * prob_ratio + opts.w_embed * max(embed_sim, 0.0) + opts.w_support * support
    return float(min(max(gate, 0.0), 1.0))


def verify_soft(logits: np.ndarray, draft: np.ndarray, soft_check, confirm: int = 0) -> Verdict:
    """Soft-gated rule on a chain draft. logits: [k+1, V]; draft: [k]; soft_check(row, x, top): whether
    draft token x passes the soft gate where the target's top token is `top` (SoftVerifier.check).

    At each position the draft token is accepted if it is the target's top token, or if soft_check
    takes it and the next `confirm` draft tokens are the target's top tokens (a *soft* acceptance).
    Rows after a soft acceptance were computed with the draft token in place, so they remain valid.
    """
    targets = logits.argmax(axis=1)  # [k+1]
    soft = []
    n = 0
    m = confirm
    for i, x in enumerate(draft.tolist()):
        top = int(targets[i])
        if x == top:
            soft.append(False)
        elif (i + m < len(draft) and np.array_equal(draft[i + 1 : i + 1 + m], targets[i + 1 : i + 1 + m])
              and soft_check(logits[i], x, top)):
            soft.append(True)
        else:
            break
        n += 1
    return Verdict(accepted=n, next_token=int(targets[n]), soft=np.asarray(soft, bool))


def soft_accepts(
    row: np.ndarray, x: int, top: int, embeddings: np.ndarray, protected: np.ndarray, support: float, opts: SoftOptions,
    run_char: np.ndarray | None = None,
) -> bool:
    """Whether draft token x, not the top token of logits `row` [V], passes the soft gate.
    embeddings: [V, d] unit rows; protected: [V] bool (special/control/end-of-generation tokens and
    tokens with digits: exact match only); run_char: [V] int32 (see `run_chars`). Two runs
    of one character ('``' for '```', two spaces for four) never pass: their length is structure
    (a code fence, an indent), and their embeddings are near-identical, so the gate would."""
    if opts.theta >= 1.0 or protected[x] or protected[top]:
        return False
    if run_char is not None and run_char[x] >= 0 and run_char[x] == run_char[top]:
        return False
    z = row.astype(np.float64) - row[top]
    p = np.exp(z)
    total = p.sum()
    entropy = float(np.log(total) - (p * z).sum() / total)
    embed_sim = float(embeddings[x].astype(np.float32) @ embeddings[top].astype(np.float32))
    return soft_gate(float(p[x]), entropy, embed_sim, support, opts) >= opts.theta


def verify_tree(
    logits: np.ndarray, tokens: np.ndarray, parents: np.ndarray, soft_check=None, confirm: int = 0
) -> Verdict:
    """Greedy rule on a tree draft. logits: [n+1, V] rows for [root, node 0, ..., node n-1];
    tokens, parents: [n] (parents[i] = -1: under the root).

    From the root, move to the child whose token is the target's top token at the current row (or,
    with soft_check(row, x, top), the first child in best-first order that it accepts and below
    which `confirm` nodes in a row are the target's top tokens) until no child is; the accepted
    path is the nodes moved through.
    """
    targets = logits.argmax(axis=1)  # [n+1]
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(parents.tolist()):
        kids.setdefault(p, []).append(i)

    def confirmed(node: int, depth: int) -> bool:  # node's row is node + 1
        return depth == 0 or any(tokens[c] == targets[node + 1] and confirmed(c, depth - 1) for c in kids.get(node, ()))

    path: list[int] = []
    soft: list[bool] = []
    at = -1
    while True:
        top = int(targets[at + 1])
        options = kids.get(at, ())
        step = next((c for c in options if tokens[c] == top), None)
        is_soft = False
        if step is None and soft_check is not None:
            step = next((c for c in options
                         if confirmed(c, confirm) and soft_check(logits[at + 1], int(tokens[c]), top)), None)
            is_soft = step is not None
        if step is None:
            break
        path.append(step)
        soft.append(is_soft)
        at = step
    return Verdict(len(path), int(targets[at + 1]), np.asarray(soft, bool), np.asarray(path, np.int64))


SYNTAX_RUN = 6  # the longest run whose length is markup: ``` fences, **bold**, ###### headings


def run_chars(pieces: list[str]) -> np.ndarray:
    """[V] int32: for a token whose text (less one leading space) is one non-alphanumeric character
    repeated, that character's code point, where the run's length carries meaning: whitespace of any
    length (indents, paragraph breaks) and punctuation up to SYNTAX_RUN characters ('```', '**',
    '###'); -1 for every other token, longer punctuation runs included: a 16-star rule or a 24-star
    one is the same decoration (on the 1.5B's grounded-break task, taking a document's 16 stars for
    the target's 24 led into a quote the target then followed: tau 2.46 -> 11.55)."""
    out = np.full(len(pieces), -1, np.int32)
    for t, piece in enumerate(pieces):
        core = piece[1:] if piece.startswith(" ") and piece.strip(" ") else piece
        if core and not core[0].isalnum() and core == core[0] * len(core) and (
                core[0].isspace() or len(core) <= SYNTAX_RUN):
            out[t] = ord(core[0])
    return out


class SoftVerifier:
    """Per-model data of the soft rule: token embeddings, the protected-token mask and the runs."""

    def __init__(self, engine, opts: SoftOptions):
        from .token_embeddings import token_embeddings

        self.opts = opts
        self.embeddings = token_embeddings(engine.path)  # [V, d] float16
        pieces = [engine.piece(t).decode("utf-8", "replace") for t in range(engine.n_vocab)]
        digits = np.array([any(ch.isdigit() for ch in piece) for piece in pieces])
        self.protected = engine.special_mask | digits  # [V] bool
        self.run_char = run_chars(pieces)  # [V] int32

    def with_options(self, opts: SoftOptions) -> "SoftVerifier":
        """The same model data under other options (no second dequantization)."""
        other = object.__new__(SoftVerifier)
        other.embeddings, other.protected, other.run_char, other.opts = self.embeddings, self.protected, self.run_char, opts
        return other

    def __call__(self, logits: np.ndarray, draft: np.ndarray, support: float) -> Verdict:
        return verify_soft(logits, draft, self.check(support), self.opts.confirm)

    def accepts(self, row: np.ndarray, x: int, top: int, support: float) -> bool:
        """soft_accepts with this model's data."""
        return soft_accepts(row, x, top, self.embeddings, self.protected, support, self.opts, self.run_char)

    def check(self, support: float):
        """soft_accepts(row, x, top) for one draft's support, as verify_soft and verify_tree take it."""
        return lambda row, x, top: self.accepts(row, x, top, support)


@dataclass(frozen=True)
class AcceptanceRule:
    """Picks the rule: sampling when temperature > 0, else soft (when given) or exact."""

    temperature: float = 0.0
    soft: SoftVerifier | None = None
    truncation: Truncation = NO_TRUNCATION  # sampling only: greedy decoding keeps the top token anyway

    def __call__(self, logits: np.ndarray, draft: np.ndarray, rng: np.random.Generator, support: float = 0.0) -> Verdict:
        if self.temperature > 0:
            return verify_sampling(logits, draft, self.temperature, rng, self.truncation)
        if self.soft is not None and len(draft):
            return self.soft(logits, draft, support)
        return verify_exact(logits, draft)

    def takes_instead(self, row: np.ndarray, x: int, top: int, support: float) -> bool:
        """Whether this rule would accept token x where the target's top token (of logits `row` [V])
        is `top`: only the soft rule in greedy decoding ever does, when x passes its gate."""
        return self.soft is not None and self.temperature <= 0 and x != top and self.soft.accepts(row, x, top, support)

    def tree(self, logits: np.ndarray, tokens: np.ndarray, parents: np.ndarray, support: float = 0.0) -> Verdict:
        """A tree draft's verdict (greedy decoding only: sampling verifies chains)."""
        if self.temperature > 0:
            raise ValueError("tree drafts are verified greedily; sample with chain drafts")
        if self.soft is None:
            return verify_tree(logits, tokens, parents)
        return verify_tree(logits, tokens, parents, self.soft.check(support), self.soft.opts.confirm)


def top2_gap(row: np.ndarray) -> float:
    """Logit gap between the best and second-best token of one row [V]."""
    i = int(np.argmax(row))  # two linear passes, no sort: ~20x cheaper than np.partition on [49152]
    second = max(row[:i].max(initial=-np.inf), row[i + 1 :].max(initial=-np.inf))
    return float(row[i] - second)
