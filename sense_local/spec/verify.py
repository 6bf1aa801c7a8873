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


def sample_from(p: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def verify_sampling(
    logits: np.ndarray, draft: np.ndarray, temperature: float, rng: np.random.Generator
) -> Verdict:
    """Speculative sampling with a deterministic draft. logits: [k+1, V]; draft: [k]."""
    for i, x in enumerate(draft):
        p = softmax(logits[i], temperature)
        if rng.random() < p[x]:
            continue
        p[x] = 0.0  # (p - onehot(x))+ : the rest of the mass, renormalised by sample_from
        return Verdict(accepted=i, next_token=sample_from(p, rng))
    return Verdict(accepted=len(draft), next_token=sample_from(softmax(logits[len(draft)], temperature), rng))


@dataclass(frozen=True)
class AcceptanceRule:
    """Configuration around the rule functions; `__call__` picks exact or sampling by temperature."""

    name: str = "exact"
    temperature: float = 0.0

    def __call__(self, logits: np.ndarray, draft: np.ndarray, rng: np.random.Generator) -> Verdict:
        if self.temperature > 0:
            return verify_sampling(logits, draft, self.temperature, rng)
        return verify_exact(logits, draft)


def top2_gap(row: np.ndarray) -> float:
    """Logit gap between the best and second-best token of one row [V]."""
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])
