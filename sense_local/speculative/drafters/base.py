"""The drafter role and the acceptance estimates drafters keep to let draft length adapt."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..types import CommittedKeys, Draft, Feedback, GenerationStats, RowCandidates

# a chain's token accepted with a lower chance is not worth building (`AcceptanceEstimate.chain(useful=True)`)
USEFUL = 0.01


class Drafter(ABC):
    """Proposes a continuation of the committed sequence; learns from verification feedback.

    Lifecycle per generation: `begin(prompt)`, then repeatedly `propose()` -> loop verifies ->
    `update(feedback)` and `extend(tokens)` with everything emitted (accepted + target's token).
    A drafter that `needs_keys` is also handed the key states of every committed position
    (`add_keys`: the prompt's after `begin`, then each decode's), and one that wants `candidates`
    the target's likeliest next tokens at each decode's rows (`add_candidates`: the rows that read a
    kept token, or every row where trees fill the decode, loop.py's FILLED): it never reads the engine.
    """

    name: str = "drafter"
    needs_keys: bool = False  # True: the loop asks the target for key states on every decode
    candidates: int = 0  # K > 0: the loop hands over its rows' K likeliest next tokens (see above),
    candidate_rate: float = 0.0  # where a draft accepted at this rate (its best) pays on the cost curve

    @abstractmethod
    def begin(self, prompt: Sequence[int]) -> None: ...

    @abstractmethod
    def extend(self, tokens: Sequence[int]) -> None: ...

    @abstractmethod
    def propose(self, max_len: int) -> Draft | None:
        """Candidate continuation (up to max_len tokens) with a per-token acceptance estimate."""

    def update(self, feedback: Feedback) -> None:  # noqa: B027 - optional hook
        pass

    def cheap_verification(self, cheap: bool) -> None:  # noqa: B027 - drafters that size by it
        """Before each reply's `begin`: whether a decode of 16 rows costs under two one-token decodes
        (loop.py's FILLED: a GPU, --free-verification), where a weak source's short drafts pay."""

    def add_keys(self, keys: CommittedKeys) -> None:  # noqa: B027 - drafters that need_keys
        """Key states of committed positions (views: copy what is kept)."""

    def add_candidates(self, candidates: RowCandidates) -> None:  # noqa: B027 - drafters with `candidates`
        """The likeliest next tokens at each row of the latest decode (greedy rows only)."""

    def report(self, stats: GenerationStats) -> None:  # noqa: B027 - optional hook
        """Add the drafter's own figures to a finished generation's statistics."""


class AcceptanceEstimate:
    """Per-key estimate of a = P(next draft token accepted | previous accepted), decayed.

    A step that drafted k tokens and had n accepted contributes n successes and (n < k) one failure:
    the maximum-likelihood estimate of a geometric run length. A prior (a0, weight) keeps early
    estimates sane, and a decay lets the estimate follow the text (copying vs free writing).

    With `split_first`, a draft's first token is estimated apart (`first`, `chain`): a proposal
    not verified is scored on its first token alone (the loop's shadow, SENSE's rivals), and a
    place whose next token is right is not a copy that runs on. Counted together, the first tokens
    of chance matches (a reply restating its question, a phrase of the earlier answer) raised the
    estimate of the run after them: on the 1.5B's everyday kinds prompt lookup then drafted 15 tokens
    at 0.87-0.89 and kept 1-3 of them (replayed, benchmarks/replay_bench.py). Split, the run's
    estimate learns only from verified drafts' later tokens.
    """

    def __init__(self, priors: dict, weight: float = 3.0, decay: float = 0.97, pool=None, split_first: bool = False):
        # the first tokens' own estimate (split_first), kept as the run's is; None: counted in the run's
        self.first_tokens = AcceptanceEstimate(priors, weight, decay, pool) if split_first else None
        self.priors = priors  # key -> a0, the first tokens' and the run's
        self.weight = weight
        self.decay = decay
        self.pool = pool  # key -> coarser key: keys of one pool learn from each other's observations
        self.successes: dict = {}
        self.failures: dict = {}

    @property
    def priors(self) -> dict:
        return self._priors

    @priors.setter
    def priors(self, priors: dict) -> None:  # a replay's variant sets both (benchmarks/replay_bench.py)
        self._priors = priors
        if self.first_tokens is not None:
            self.first_tokens.priors = priors

    def reset(self) -> None:
        self.successes.clear()
        self.failures.clear()
        if self.first_tokens is not None:
            self.first_tokens.reset()

    def _smoothed(self, key, prior: float) -> float:
        s = self.successes.get(key, 0.0)
        f = self.failures.get(key, 0.0)
        return (s + prior * self.weight) / (s + f + self.weight)

    def get(self, key) -> float:
        """The key's estimate; with a pool, shrunk towards its pool's (itself shrunk to the prior).
        The pool's prior for a key leaves out the key's own share (as far as the decays allow):
        counted in both, one lucky draft moved a key alone in its pool twice as far (SENSE's
        context estimate 0.25 -> 0.58 after one 3-token hit)."""
        a0 = self.priors[key]
        if self.pool is not None:
            pool = ("pool", self.pool(key))
            s = max(0.0, self.successes.get(pool, 0.0) - self.successes.get(key, 0.0))
            f = max(0.0, self.failures.get(pool, 0.0) - self.failures.get(key, 0.0))
            a0 = (s + a0 * self.weight) / (s + f + self.weight)
        return self._smoothed(key, a0)

    def first(self, key) -> float:
        """P(a draft's first token is accepted) for the key (`get` where not split)."""
        return (self.first_tokens if self.first_tokens is not None else self).get(key)

    def chain(self, key, k: int, useful: bool = False) -> np.ndarray:
        """[k] P(a chain's first i + 1 tokens are all accepted): its first token's, then the run's
        (`get`: a Draft of it is `geometric` with that acceptance). With `useful`, only as many of the
        first k as are each accepted with a chance of USEFUL or more (at least one): tokens past them
        add under USEFUL expected tokens apiece, so no CPU's curve verifies them, and building them (a
        copy's replacements, end-of-generation checks, the policy's arrays) is wasted work on every
        step whose proposal is not verified."""
        first, run = self.first(key), self.get(key)
        if useful:
            r = min(run, 0.999)
            k = (min(k, 1) if first < USEFUL or r < USEFUL or k <= 1
                 else min(k, 1 + int(math.log(USEFUL / first) / math.log(r))))  # math: no numpy on scalars per step
        return np.array([first * run**i for i in range(k)])  # a list: numpy's calls cost more on a few tokens

    def observe(self, key, drafted: int, accepted: int) -> None:
        if self.first_tokens is not None:
            self.first_tokens._count(key, 1, min(accepted, 1))
            if accepted == 0 or drafted < 2:
                return  # nothing said of the run after a first token
            drafted, accepted = drafted - 1, accepted - 1
        self._count(key, drafted, accepted)

    def _count(self, key, drafted: int, accepted: int) -> None:
        keys = (key, ("pool", self.pool(key))) if self.pool is not None else (key,)
        for k in keys:
            self.successes[k] = self.successes.get(k, 0.0) * self.decay + accepted
            self.failures[k] = self.failures.get(k, 0.0) * self.decay + (1.0 if accepted < drafted else 0.0)
