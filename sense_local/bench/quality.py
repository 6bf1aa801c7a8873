"""Quality of a generation against plain decoding: the target's own log-probability of the text,
chrF against the `ar` output, and whether a known answer string appears."""
from __future__ import annotations

from collections import Counter

import numpy as np


def mean_logprob(engine, prompt: list[int], output: list[int]) -> float:
    """Mean log-probability the target gives `output` after `prompt`, scored in one decode pass.
    The engine's KV state is restored to the prompt afterwards."""
    if not output:
        return 0.0
    engine.prefill(prompt)
    n = len(prompt)
    first = engine.eval(prompt[-1:], n - 1, outputs="all", with_keys=False).logits[0].astype(np.float64)
    rows = [first]
    if len(output) > 1:
        rest = engine.eval(output[:-1], n, outputs="all", with_keys=False).logits.astype(np.float64)
        rows.extend(rest)
    logits = np.stack(rows)  # [len(output), V]
    top = logits.max(axis=1, keepdims=True)
    logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    chosen = logits[np.arange(len(output)), output]
    engine.truncate(n)
    return float((chosen - logz).mean())


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015): character n-gram F-score, n = 1..6, recall weighted by beta; 0..100."""
    hyp, ref = hypothesis.replace(" ", ""), reference.replace(" ", "")
    if not hyp and not ref:
        return 100.0
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        overlap = sum((h & r).values())
        precisions.append(overlap / sum(h.values()))
        recalls.append(overlap / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    return 100.0 * (1 + beta**2) * p * r / (beta**2 * p + r)


def contains_answer(text: str, answer: str | None) -> bool | None:
    return None if answer is None else answer.lower() in text.lower()
