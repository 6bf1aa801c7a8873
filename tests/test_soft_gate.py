"""Soft-gated evaluation: the gate's edge cases, protected tokens, theta = 1 equals exact."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from sense_local.errors import SenseError
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.verify import SoftOptions, soft_gate, verify_exact, verify_soft

OPTS = SoftOptions(theta=0.6)


def test_gate_terms_and_floors():
    assert soft_gate(0.05, 1.0, 0.9, 1.0, OPTS) == 0.0  # r below the floor: never
    assert soft_gate(0.9, 10.0, 0.9, 1.0, OPTS) == 0.0  # the target is unsure: never
    low, high = soft_gate(0.2, 1.0, 0.5, 0.5, OPTS), soft_gate(0.8, 1.0, 0.5, 0.5, OPTS)
    assert 0.0 < low < high <= 1.0
    assert soft_gate(0.5, 1.0, 0.9, 0.5, OPTS) > soft_gate(0.5, 1.0, 0.1, 0.5, OPTS)  # embedding similarity counts
    assert soft_gate(0.5, 1.0, -0.5, 0.0, OPTS) == pytest.approx(OPTS.w_prob * 0.5)  # negative cosine adds nothing
    with pytest.raises(SenseError):
        SoftOptions(theta=1.5)


def _toy(V=8):
    emb = np.eye(V, dtype=np.float16)
    emb[2] = emb[1] = np.float16(2**-0.5)  # tokens 1 and 2 are synonyms
    emb[1, 0] = emb[2, 0] = 0
    emb[1, 3] = emb[2, 3] = np.float16(2**-0.5)
    protected = np.zeros(V, bool)
    protected[7] = True  # e.g. end of sequence or a digit
    return emb, protected


def test_soft_rule_accepts_synonyms_and_guards_protected_tokens():
    emb, protected = _toy()
    logits = np.full((3, 8), -5.0, np.float32)
    logits[0, 1], logits[0, 2] = 3.0, 2.8  # top is 1, draft says its synonym 2 (p ratio ~0.82)
    logits[1, 4] = 3.0
    logits[2, 5] = 3.0
    v = verify_soft(logits, np.array([2, 4], np.int32), emb, protected, 0.5, OPTS)
    assert (v.accepted, v.next_token, v.soft.tolist()) == (2, 5, [True, False])
    # a protected token on either side is never soft-accepted
    logits_p = logits.copy()
    logits_p[0, 7] = 2.9
    assert verify_soft(logits_p, np.array([7, 4], np.int32), emb, protected, 1.0, OPTS).accepted == 0
    # theta = 1 is the exact rule
    exact = verify_exact(logits, np.array([2, 4], np.int32))
    hard = verify_soft(logits, np.array([2, 4], np.int32), emb, protected, 1.0, SoftOptions(theta=1.0))
    assert (hard.accepted, hard.next_token) == (exact.accepted, exact.next_token) == (0, 1)


def test_protected_mask_covers_specials_and_digits(engine):
    decoder = make_decoder(engine, GenerationOptions(method="sense-soft", max_tokens=4))
    verifier = decoder.rule.soft
    assert verifier.protected[engine.eos_id]
    for text in (" 2024", "7", " 3"):
        assert verifier.protected[engine.tokenize(text, add_special=False)[-1]]
    assert not verifier.protected[engine.tokenize(" house", add_special=False)[0]]
    assert verifier.embeddings.shape == (engine.n_vocab, engine.n_embd)


PROMPTS = [
    "Rewrite this in simpler words: The committee postponed the decision because several members were absent.",
    "Summarise: Photosynthesis lets plants turn light, water and carbon dioxide into sugar and oxygen.",
]


@pytest.mark.parametrize("text", PROMPTS)
def test_theta_one_equals_exact_sense_and_soft_is_deterministic(engine, text):
    prompt = chat(engine, text)

    def run(method, theta=None):
        d = make_decoder(engine, GenerationOptions(method=method, max_tokens=64, theta=theta))
        return [e.token for e in d.generate(prompt, 64) if e.token >= 0], d.stats

    exact, _ = run("sense-chain")  # sense-soft drafts chains
    hard, hard_stats = run("sense-soft", theta=1.0)
    assert hard == exact and hard_stats.soft_accepted == 0
    a, stats_a = run("sense-soft", theta=0.5)
    b, stats_b = run("sense-soft", theta=0.5)
    assert a == b and stats_a.soft_accepted == stats_b.soft_accepted
