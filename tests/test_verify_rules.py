"""Acceptance rules: exact is greedy; sampling reproduces the target distribution."""
from __future__ import annotations

import numpy as np

from conftest import chat
import pytest

from sense_local.errors import SenseError
from sense_local.speculative.verify import Truncation, softmax, verify_exact, verify_sampling


def test_exact_accepts_the_matching_prefix_and_returns_the_target_token():
    logits = np.zeros((4, 10), np.float32)
    for row, tok in enumerate([3, 5, 7, 9]):
        logits[row, tok] = 1.0
    v = verify_exact(logits, np.array([3, 5, 1], np.int32))
    assert (v.accepted, v.next_token) == (2, 7)
    v = verify_exact(logits, np.array([3, 5, 7], np.int32))
    assert (v.accepted, v.next_token) == (3, 9)  # bonus token
    v = verify_exact(logits[:1], np.array([], np.int32))
    assert (v.accepted, v.next_token) == (0, 3)


def _emitted_distribution(logits_rows, draft, temperature, n, seed, truncation=Truncation()):
    rng = np.random.default_rng(seed)
    counts = np.zeros(logits_rows.shape[1])
    for _ in range(n):
        v = verify_sampling(logits_rows, draft, temperature, rng, truncation)
        counts[draft[0] if v.accepted >= 1 else v.next_token] += 1
    return counts / n


def test_sampling_rule_matches_a_toy_distribution():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]], np.float32))
    p = softmax(logits[0], 1.0)
    for x in (0, 3):  # a likely and an unlikely draft token
        freq = _emitted_distribution(logits, np.array([x], np.int32), 1.0, 20000, seed=x)
        assert np.abs(freq - p).max() < 0.015, (x, freq, p)


def test_sampling_rule_matches_the_real_model(engine):
    prompt = chat(engine, "Name a fruit.")
    row = engine.prefill(prompt).logits[-1:].copy()
    logits = np.vstack([row, row])
    temperature = 0.8
    p = softmax(row[0], temperature)
    top = np.argsort(p)[::-1][:8]

    def bucketed(q):  # the 8 likeliest tokens and "the rest": the tail is too thin to compare
        return np.append(q[top], 1.0 - q[top].sum())

    for x in (int(top[0]), int(top[3])):
        freq = _emitted_distribution(logits, np.array([x], np.int32), temperature, 3000, seed=x)
        tv = 0.5 * np.abs(bucketed(freq) - bucketed(p)).sum()
        assert tv < 0.04, (x, tv)


def test_truncation_keeps_what_top_k_top_p_and_min_p_name():
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    assert np.allclose(Truncation(top_k=2).apply(p.copy()), [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])
    assert np.count_nonzero(Truncation(top_p=0.8).apply(p.copy())) == 3  # 0.5 + 0.2 < 0.8 <= 0.85
    assert np.count_nonzero(Truncation(top_p=0.7).apply(p.copy())) == 2
    assert np.count_nonzero(Truncation(min_p=0.25).apply(p.copy())) == 3  # p >= 0.125
    for bad in (dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=1.0)):
        with pytest.raises(SenseError):
            Truncation(**bad)


def test_sampling_with_a_draft_matches_the_truncated_distribution():
    """Speculative sampling stays lossless under top_p: the emitted tokens follow the truncated p,
    whether the draft token is inside the kept set or cut from it."""
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05], [0.2, 0.2, 0.2, 0.2, 0.2]], np.float32))
    truncation = Truncation(top_p=0.8)
    p = truncation.apply(softmax(logits[0], 1.0))
    for x in (1, 4):  # kept, and cut
        freq = _emitted_distribution(logits, np.array([x], np.int32), 1.0, 20000, seed=x, truncation=truncation)
        assert np.abs(freq - p).max() < 0.015, (x, freq, p)
    assert freq[3] == freq[4] == 0
