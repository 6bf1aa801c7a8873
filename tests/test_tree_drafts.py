"""Tree drafts: the best-first trie, the greedy walk down it, the loop on a fake engine, and the
real llama.cpp decode with one sequence per branch."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from fakes import FakeEngine, greedy_reference
from sense_local.bench.runner import NEAR_TIE, first_divergence
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.cost import FLAT
from sense_local.speculative.drafters.base import Drafter
from sense_local.speculative.drafters.trie import best_first_tree
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.types import Draft
from sense_local.speculative.verify import verify_tree

CONTS = np.array([[1, 2, 3, 4], [1, 2, 5, 6], [1, 7, 8, -1], [9, 9, 9, 9]], np.int32)


def test_best_first_tree_orders_nodes_and_shares_probability_at_splits():
    tokens, parents, probs = best_first_tree(CONTS, np.array([1.0, 1.0, 1.0, 0.5]), 0.9, 8, 3)
    assert len(tokens) == 8
    assert all(p < i for i, p in enumerate(parents))  # a parent comes before its children
    assert np.all(np.diff(probs) <= 1e-7)  # best first
    for i, p in enumerate(parents):
        if p >= 0:
            assert probs[i] <= probs[p]
    assert tokens[0] == 1 and probs[0] == pytest.approx(0.9 * 3 / 3.5)  # the 9-branch holds 0.5 of 3.5
    has_child = np.zeros(len(tokens), bool)
    has_child[parents[parents >= 0]] = True
    assert (~has_child).sum() <= 3  # at most max_branches leaves
    assert 9 not in tokens.tolist()  # the weak branch did not fit in 3 leaves
    # one continuation is a chain: probabilities a, a^2, ...
    tokens, parents, probs = best_first_tree(CONTS[:1], np.ones(1), 0.8, 8, 4)
    assert tokens.tolist() == [1, 2, 3, 4] and parents.tolist() == [-1, 0, 1, 2]
    assert probs == pytest.approx([0.8, 0.64, 0.512, 0.4096])


def test_verify_tree_walks_the_matching_children():
    # root -> 1 -> {2 -> 3, 7}; the target wants 1, 7, then 5 (no such child): path [0, 2], next 5
    tokens = np.array([1, 2, 7, 3], np.int32)
    parents = np.array([-1, 0, 0, 1], np.int32)
    logits = np.zeros((5, 10), np.float32)
    for row, want in enumerate([1, 7, 0, 5, 0]):  # rows: root, node 0..3; after "7" (node 2) comes 5
        logits[row, want] = 1.0
    verdict = verify_tree(logits, tokens, parents)
    assert verdict.path.tolist() == [0, 2] and verdict.accepted == 2 and verdict.next_token == 5
    assert not verdict.soft.any()
    logits[0, :] = 0
    logits[0, 4] = 1.0  # the target rejects every child of the root
    verdict = verify_tree(logits, tokens, parents)
    assert verdict.accepted == 0 and verdict.next_token == 4 and verdict.path.tolist() == []


def test_verify_tree_soft_check_takes_the_first_child_it_accepts():
    tokens = np.array([1, 3, 2], np.int32)  # root -> {1 -> 2, 3}
    parents = np.array([-1, -1, 0], np.int32)
    logits = np.zeros((4, 10), np.float32)
    logits[0, 5] = 1.0  # the target wants 5 after the root: no child has it
    logits[1, 2] = 1.0  # after node 0 it wants 2 (node 2)
    exact = verify_tree(logits, tokens, parents)
    assert exact.accepted == 0 and exact.next_token == 5
    soft = verify_tree(logits, tokens, parents, soft_check=lambda row, x, top: x == 1)
    assert soft.path.tolist() == [0, 2] and soft.soft.tolist() == [True, False]
    confirmed = verify_tree(logits, tokens, parents, soft_check=lambda row, x, top: x == 1, confirm=1)
    assert confirmed.path.tolist() == [0, 2]  # node 2 below it is the target's top token: confirmed
    logits[1, 2], logits[1, 6] = 0.0, 1.0  # now the target wants 6 after node 0: no child has it
    unconfirmed = verify_tree(logits, tokens, parents, soft_check=lambda row, x, top: x == 1, confirm=1)
    assert unconfirmed.accepted == 0 and unconfirmed.next_token == 5


def test_draft_cut_and_main_path():
    draft = Draft(np.array([1, 2, 7, 3], np.int32), "t", 0.9, None, np.array([-1, 0, 0, 1], np.int32),
                  np.array([0.9, 0.5, 0.3, 0.4]))
    assert draft.first(2).parents is None  # a single path is a chain
    assert draft.first(3).parents.tolist() == [-1, 0, 0]
    assert draft.main_path().tokens.tolist() == [1, 2, 3] and draft.main_path().parents is None


class ForkDrafter(Drafter):
    """Proposes a tree whose first branch is wrong after one token and whose second is right."""

    name = "fork"

    def begin(self, prompt):
        self.ctx = list(prompt)
        self.feedback = []

    def extend(self, tokens):
        self.ctx.extend(int(t) for t in tokens)

    def propose(self, max_len):
        good = greedy_reference(self.ctx, 4)
        if len(good) < 4 or max_len < 5:
            return None
        wrong = (good[1] + 1) % 64 or 2
        tokens = np.array([good[0], wrong, good[1], good[2], good[3]], np.int32)
        parents = np.array([-1, 0, 0, 2, 3], np.int32)
        return Draft(tokens, self.name, 0.9, None, parents, np.array([0.9, 0.5, 0.45, 0.4, 0.35]))

    def update(self, feedback):
        self.feedback.append((feedback.accepted, feedback.drafted))


def test_loop_keeps_the_accepted_branch_of_a_tree():
    eng = FakeEngine()
    drafter = ForkDrafter()
    dec = SpecDecoder(eng, method="t", drafter=drafter, cost=FLAT)
    out = [e.token for e in dec.generate([5, 9, 13, 2], 40)]
    assert out == greedy_reference([5, 9, 13, 2], 40)
    assert eng.tokens == [5, 9, 13, 2] + out[:-1]
    assert (4, 4) in drafter.feedback  # the second branch, whole: nothing more was drafted on it
    assert dec.stats.accepted > 0 and dec.stats.tau > 3


def test_eval_tree_matches_chains_and_keeps_one_branch(engine):
    prompt = engine.tokenize("The quick brown fox jumps over the lazy dog. The quick brown fox")
    engine.reset()
    last = int(engine.prefill(prompt, with_keys=True).logits[-1].argmax())
    base = engine.n_past
    a = engine.tokenize(" jumps over the", add_special=False)
    b = engine.tokenize(" ran away", add_special=False)
    tokens = np.array(a + b, np.int32)
    parents = np.array([-1, *range(len(a) - 1), -1, *range(len(a), len(a) + len(b) - 1)], np.int32)
    tree = engine.eval_tree(last, tokens, parents, with_keys=True)
    logits, keys = tree.logits.copy(), tree.keys.copy()
    engine.keep_path(range(len(a), len(a) + len(b)), tokens)  # keep branch b
    assert engine.n_past == base + 1 + len(b) and engine.tokens[base:] == [last, *b]
    kept_keys = engine.committed_keys(engine.n_past).copy()
    after_tree = engine.eval([100], outputs="last", with_keys=True).logits[-1].copy()
    for branch, rows in ((a, [0, *range(1, len(a) + 1)]), (b, [0, *range(len(a) + 1, len(tokens) + 1)])):
        engine.truncate(base)
        chain = engine.eval([last, *branch], outputs="all", with_keys=True)
        assert np.allclose(chain.logits, logits[rows], atol=1e-3)
        assert np.allclose(chain.keys, keys[rows], atol=1e-3)
    # branch b is now committed by the chain: the tree left the same conversation behind (flash
    # attention reads the cache in cell order, so the sums differ in rounding only)
    assert np.allclose(engine.committed_keys(engine.n_past), kept_keys, atol=1e-3)
    after_chain = engine.eval([100], outputs="last", with_keys=True).logits[-1]
    assert after_chain.argmax() == after_tree.argmax()
    assert np.abs(after_chain - after_tree).max() < 2.0


def test_sense_trees_are_lossless_on_a_quote(engine):
    from test_retrieval_drafters import QUOTE

    prompt = chat(engine, QUOTE)
    engine.prefill(prompt, outputs="all", with_keys=True)
    runs = {}
    for method in ("ar", "sense"):
        dec = make_decoder(engine, GenerationOptions(method=method, max_tokens=60), record_gaps=method == "ar")
        runs[method] = ([e.token for e in dec.generate(prompt, 60) if e.token >= 0], dec.stats)
    (ar, ar_stats), (out, stats) = runs["ar"], runs["sense"]
    assert stats.accepted >= 5 and stats.tokens == len(out)
    at = first_divergence(out, ar)
    if at is not None:
        assert ar_stats.top2_gaps[at] < NEAR_TIE
