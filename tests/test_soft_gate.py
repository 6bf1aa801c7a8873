"""Soft-gated evaluation: the gate's edge cases, protected tokens, theta = 1 equals exact."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from sense_local.errors import SenseError
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.verify import SoftOptions, run_chars, soft_accepts, soft_gate, verify_exact, verify_soft

OPTS = SoftOptions(theta=0.6, min_support=0.0, confirm=0)  # the gate's own terms, without its two guards


def test_gate_terms_and_floors():
    assert soft_gate(0.05, 1.0, 0.9, 1.0, OPTS) == 0.0  # r below the floor: never
    assert soft_gate(0.9, 10.0, 0.9, 1.0, OPTS) == 0.0  # the target is unsure: never
    low, high = soft_gate(0.2, 1.0, 0.5, 0.5, OPTS), soft_gate(0.8, 1.0, 0.5, 0.5, OPTS)
    assert 0.0 < low < high <= 1.0
    assert soft_gate(0.5, 1.0, 0.9, 0.5, OPTS) > soft_gate(0.5, 1.0, 0.1, 0.5, OPTS)  # embedding similarity counts
    assert soft_gate(0.5, 1.0, -0.5, 0.0, OPTS) == pytest.approx(OPTS.w_prob * 0.5)  # negative cosine adds nothing
    with pytest.raises(SenseError):
        SoftOptions(theta=1.5)


def soft_verdict(logits, draft, emb, protected, support, opts, run_char=None):
    """verify_soft with the gate of these toy tables, as SoftVerifier composes it."""
    check = lambda row, x, top: soft_accepts(row, x, top, emb, protected, support, opts, run_char)  # noqa: E731
    return verify_soft(logits, np.asarray(draft, np.int32), check, opts.confirm)


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
    v = soft_verdict(logits, np.array([2, 4], np.int32), emb, protected, 0.5, OPTS)
    assert (v.accepted, v.next_token, v.soft.tolist()) == (2, 5, [True, False])
    # a protected token on either side is never soft-accepted
    logits_p = logits.copy()
    logits_p[0, 7] = 2.9
    assert soft_verdict(logits_p, np.array([7, 4], np.int32), emb, protected, 1.0, OPTS).accepted == 0
    # theta = 1 is the exact rule
    exact = verify_exact(logits, np.array([2, 4], np.int32))
    hard = soft_verdict(logits, np.array([2, 4], np.int32), emb, protected, 1.0, SoftOptions(theta=1.0))
    assert (hard.accepted, hard.next_token) == (exact.accepted, exact.next_token) == (0, 1)


def test_soft_acceptance_needs_a_supported_draft_and_a_confirming_token():
    """The two guards of the default options: a draft the drafter does not trust gets no soft
    acceptance, and inside a draft a substitution stands only if the target then takes the draft's
    next token as its own."""
    emb, protected = _toy()
    opts = SoftOptions(theta=0.6)
    assert opts.min_support > 0 and opts.confirm == 1
    assert soft_gate(0.8, 1.0, 0.9, opts.min_support - 0.01, opts) == 0.0
    assert soft_gate(0.8, 1.0, 0.9, opts.min_support, opts) > opts.theta
    logits = np.full((3, 8), -5.0, np.float32)
    logits[0, 1], logits[0, 2] = 3.0, 2.8  # top is 1, the draft says its synonym 2
    logits[1, 4] = 3.0  # then the target wants 4
    logits[2, 5] = 3.0

    def accepted(draft, support=0.9):
        return soft_verdict(logits, draft, emb, protected, support, opts).accepted

    assert accepted([2, 4]) == 2  # confirmed: the target follows the draft after the synonym
    assert accepted([2, 6]) == 0  # the draft goes elsewhere after it: the synonym buys nothing
    assert accepted([2]) == 0  # nothing after it to confirm
    assert accepted([2, 4], support=0.3) == 0  # a guess, not a copy
    assert accepted([1, 4], support=0.0) == 2  # exact acceptance needs neither guard


def test_runs_of_one_character_are_never_exchanged():
    """'``' for '```' (measured on the 1.5B: sense-soft closed a code fence short, and lost the copy
    of the rest, tau 9.50 -> 3.46): two runs of one character whose length is markup or an indent are
    never soft-accepted for each other, whatever the gate says; a run for a word, runs of two
    characters and long decorative runs are left to the gate."""
    emb, protected = _toy()
    emb[3] = emb[1]  # 1 and 3 are near-identical in embedding space, as runs are
    run_char = np.full(8, -1, np.int32)
    run_char[1] = run_char[3] = ord("`")
    run_char[2] = ord("*")
    logits = np.full((3, 8), -5.0, np.float32)
    logits[0, 1], logits[0, 3], logits[0, 2] = 3.0, 2.9, 2.8  # top is 1 ('```'); 3 ('``') and 2 ('**') close
    logits[1, 4] = 3.0
    logits[2, 5] = 3.0

    def accepted(draft, runs=run_char):
        return soft_verdict(logits, draft, emb, protected, 0.9, OPTS, runs).accepted

    assert accepted([3, 4], runs=None) == 2  # without the run guard the gate takes it
    assert accepted([3, 4]) == 0
    assert accepted([2, 4]) == 2  # a run of another character: the gate decides
    assert run_chars(["```", " ``", "    ", "\n\n", "**", "-", " house", "**/", "a", "", "==", "*" * 16, " " * 16]).tolist() == [
        96, 96, 32, 10, 42, 45, -1, -1, -1, -1, 61, -1, 32]  # a 16-star rule is decoration; 16 spaces an indent


def test_protected_mask_covers_specials_and_digits(engine):
    decoder = make_decoder(engine, GenerationOptions(method="sense-soft", max_tokens=4))
    verifier = decoder.rule.soft
    assert verifier.protected[engine.eos_id]
    for text in (" 2024", "7", " 3"):
        assert verifier.protected[engine.tokenize(text, add_special=False)[-1]]
    assert not verifier.protected[engine.tokenize(" house", add_special=False)[0]]
    assert verifier.embeddings.shape == (engine.n_vocab, engine.n_embd)
    fence, short, stars = (engine.tokenize(t, add_special=False) for t in ("```", "``", "**"))
    assert len(fence) == len(short) == len(stars) == 1
    assert verifier.run_char[fence[0]] == verifier.run_char[short[0]] == ord("`") != verifier.run_char[stars[0]]
    assert verifier.run_char[engine.tokenize(" house", add_special=False)[0]] == -1
    row = np.full(engine.n_vocab, -20.0, np.float32)  # a sure target: the gate alone would take it
    row[fence[0]], row[short[0]] = 3.0, 2.9
    assert not verifier.accepts(row, short[0], fence[0], 1.0)
    unguarded = verifier.with_options(verifier.opts)
    unguarded.run_char = np.full_like(verifier.run_char, -1)
    assert unguarded.accepts(row, short[0], fence[0], 1.0)  # it is the run guard that refuses it


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
