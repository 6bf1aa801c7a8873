"""Exact outputs of the pure pieces on arrays of a few tokens (vLLM's tests/v1/spec_decode/test_ngram.py
style): a given context gives exactly this draft; given logits and a draft, exactly these tokens stand."""
from __future__ import annotations

import numpy as np
import pytest

from sense_local.speculative.drafters.pld import PRIORS, PromptLookupDrafter
from sense_local.speculative.verify import AcceptanceRule, verify_exact, verify_sampling, verify_soft, verify_tree


def lookup(context, max_len=8):
    drafter = PromptLookupDrafter()
    drafter.begin(context)
    return drafter.propose(max_len)


def test_prompt_lookup_continues_the_latest_match_of_the_longest_ngram():
    draft = lookup([1, 2, 3, 4, 5, 1, 2, 3], max_len=4)
    assert draft.tokens.tolist() == [4, 5, 1, 2] and draft.source == "pld"
    assert draft.key == 2 and draft.acceptance == pytest.approx(PRIORS[2])  # 3 tokens in a row matched
    assert lookup([1, 2, 3, 4, 5, 1, 2, 3], max_len=2).tokens.tolist() == [4, 5]


def test_prompt_lookup_prefers_a_longer_ngram_over_a_more_recent_shorter_one():
    # "3 1 2" occurred once (then 8); "1 2" occurred since (then 9): the 3-gram's continuation goes
    assert lookup([3, 1, 2, 8, 5, 1, 2, 9, 3, 1, 2], max_len=4).tokens.tolist() == [8, 5, 1, 2]


def test_prompt_lookup_follows_the_place_that_matches_furthest_back():
    # the 4-gram "1 2 3 4" occurred twice; the older place also agrees on the 9 before it
    draft = lookup([9, 1, 2, 3, 4, 5, 8, 1, 2, 3, 4, 6, 9, 1, 2, 3, 4], max_len=3)
    assert draft.tokens.tolist() == [5, 8, 1] and draft.key == 3  # 5 tokens in a row matched


def test_prompt_lookup_drafts_up_to_the_context_end_and_nothing_without_a_match():
    assert lookup([1, 2, 3, 1, 2]).tokens.tolist() == [3, 1, 2]
    assert lookup([1, 2, 3, 4, 5, 1, 2, 3]).tokens.tolist() == [4, 5, 1, 2, 3]  # 3 matching, 5 since the place
    assert lookup([1, 2, 3]) is None
    assert lookup([]) is None


def test_a_loop_is_drafted_on_past_the_context_end():
    """Where the match reaches back past the place it continues from (the output wrote the span since
    that place once more: a loop), the draft goes on with its own tokens (an overlapping copy)."""
    assert lookup([1, 2, 3, 1, 2, 3, 1, 2]).tokens.tolist() == [3, 1, 2, 3, 1, 2, 3, 1]  # 5 matching, 3 since
    assert lookup([7, 8, 9, 5, 5, 5, 5], max_len=6).tokens.tolist() == [5] * 6  # a one-token loop


def rows(*tops, vocab=10):
    """[len(tops), vocab] logits whose row i has its maximum (1.0) at tops[i]."""
    logits = np.zeros((len(tops), vocab), np.float32)
    logits[np.arange(len(tops)), tops] = 1.0
    return logits


def test_exact_rule_accepts_the_matching_prefix_then_gives_the_correction_or_bonus_token():
    logits = rows(2, 4, 1)  # the target's own tokens after [last], [last, d0], [last, d0, d1]
    v = verify_exact(logits, np.array([2, 3], np.int32))
    assert (v.accepted, v.next_token) == (1, 4)  # d1 = 3 rejected: the correction is 4
    v = verify_exact(logits, np.array([2, 4], np.int32))
    assert (v.accepted, v.next_token) == (2, 1)  # all accepted: the bonus token is 1
    v = verify_exact(logits[:1], np.zeros(0, np.int32))
    assert (v.accepted, v.next_token) == (0, 2)
    v = AcceptanceRule()(logits, np.array([5, 4], np.int32), np.random.default_rng(0))
    assert (v.accepted, v.next_token) == (0, 2)


def test_tree_rule_walks_the_children_the_target_chooses():
    tokens = np.array([2, 3, 4, 5], np.int32)
    parents = np.array([-1, -1, 1, 1], np.int32)  # nodes 0 and 1 under the root; 2 and 3 under node 1
    logits = rows(3, 0, 5, 0, 7)  # rows: root, node 0, node 1, node 2, node 3
    v = verify_tree(logits, tokens, parents)
    assert v.path.tolist() == [1, 3] and (v.accepted, v.next_token) == (2, 7)
    assert v.soft.tolist() == [False, False]
    v = verify_tree(rows(6, 0, 0, 0, 0), tokens, parents)
    assert v.path.tolist() == [] and (v.accepted, v.next_token) == (0, 6)


def test_soft_rule_takes_a_gated_token_only_where_the_next_draft_token_confirms_it():
    logits = rows(2, 3, 5, 6)
    draft = np.array([2, 9, 5], np.int32)  # 9 where the target wants 3, then the target's 5
    v = verify_soft(logits, draft, lambda row, x, top: (x, top) == (9, 3), confirm=1)
    assert (v.accepted, v.next_token) == (3, 6) and v.soft.tolist() == [False, True, False]
    v = verify_soft(logits, draft, lambda row, x, top: False, confirm=1)
    assert (v.accepted, v.next_token) == (1, 3)
    v = verify_soft(logits, np.array([2, 9, 7], np.int32), lambda row, x, top: True, confirm=1)
    assert (v.accepted, v.next_token) == (1, 3)  # 7 is not the target's 5: nothing confirms 9


def test_sampling_rule_keeps_a_draft_the_target_is_sure_of():
    logits = np.zeros((3, 6), np.float32)
    logits[[0, 1, 2], [4, 1, 3]] = 60.0  # p(token) ~ 1 at each row
    v = verify_sampling(logits, np.array([4, 1], np.int32), 1.0, np.random.default_rng(0))
    assert (v.accepted, v.next_token) == (2, 3)
    v = verify_sampling(logits, np.array([4, 2], np.int32), 1.0, np.random.default_rng(0))
    assert (v.accepted, v.next_token) == (1, 1)  # p(2) ~ 0 at row 1: rejected, the target's 1 drawn
