"""Prompt lookup proposals and the cost-curve policy."""
from __future__ import annotations

import numpy as np

from sense_local.speculative.cost import CostCurve, OnlineCost
from sense_local.speculative.drafters.base import USEFUL
from sense_local.speculative.drafters.pld import PRIORS, PromptLookupDrafter, match_length
from sense_local.speculative.rewrap import join_wraps, rewrapped_tokens
from sense_local.speculative.types import Feedback


def test_pld_proposes_what_followed_the_longest_recent_match():
    d = PromptLookupDrafter()
    d.begin([1, 2, 3, 4, 5, 6, 9, 2, 3, 4, 7, 8])
    d.extend([1, 2, 3, 4])
    draft = d.propose(3)
    assert draft.tokens.tolist() == [5, 6, 9]  # the 4-gram (1,2,3,4) beats the later (2,3,4)
    assert match_length(d.context, 4) == 4 and draft.key == 3  # bucket of a 4-7 token match
    d2 = PromptLookupDrafter()
    d2.begin([10, 11, 12, 13, 20, 11, 12])
    assert d2.propose(2).tokens.tolist() == [13, 20]
    d3 = PromptLookupDrafter()
    d3.begin([1, 2, 3])
    assert d3.propose(4) is None  # nothing repeats


def test_pld_trusts_a_long_verbatim_copy_more_than_a_chance_match():
    text = list(range(100, 140))
    d = PromptLookupDrafter()
    d.begin(text + [7, 8] + text[:20])  # a 20-token copy of the start is under way
    long = d.propose(8)
    assert long.tokens.tolist() == text[20:28] and match_length(d.context, 20) == 20
    d.begin([5, 6, 7, 100, 101, 9, 9, 100])  # only "100" matches
    short = d.propose(8)
    assert short.tokens.tolist()[:1] == [101]
    assert long.acceptance > short.acceptance and PRIORS[long.key] >= 0.9


def test_pld_acceptance_estimate_learns():
    d = PromptLookupDrafter()
    d.begin([1, 2, 3, 1, 2])
    draft = d.propose(4)
    before = draft.acceptance
    for _ in range(10):
        d.update(Feedback(draft, 0))
    assert d.estimate.first(draft.key) < before  # missed at the first token: says nothing of the run
    assert d.estimate.get(draft.key) == before and d.propose(4).path_probs[0] < before
    for _ in range(30):
        d.update(Feedback(draft, len(draft.tokens)))
    assert d.estimate.get(draft.key) > before and d.estimate.first(draft.key) > before


def test_best_length_follows_acceptance_and_curve():
    cpu = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.8, 2.5, 4.1, 7.2, 14.0))
    flat = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.0, 1.02, 1.05, 1.1, 1.2))
    assert cpu.best_length(0.5, 16) == 0
    assert cpu.best_length(0.95, 16) > 0
    assert flat.best_length(0.95, 30) > cpu.best_length(0.95, 30)
    assert flat.best_length(0.95, 30) >= 16
    assert cpu.best_length(0.99, 3) <= 3  # never past what the drafter has
    # a tree: its likely nodes are worth a decode on the CPU curve, its long tail of guesses is not
    tree = np.array([0.95, 0.9, 0.85, 0.8, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    assert cpu.best_size(tree) == 4
    assert flat.best_size(tree) == len(tree)  # on a flat curve (a GPU) every node is nearly free
    assert cpu.best_size(np.array([0.3, 0.1])) == 0
    assert cpu.best_size(0.9 ** np.arange(1, 17)) == cpu.best_length(0.9, 16)  # a chain is a^i


def test_online_cost_scales_to_observed_decode_times():
    prior = CostCurve((1, 2, 4, 8), (1.0, 1.5, 2.0, 3.0))
    oc = OnlineCost(prior)
    for _ in range(20):
        oc.observe(1, 0.010)
        oc.observe(4, 0.040)  # really 4x, the probe said 2x: extra cost 3 vs 1
    assert abs(oc.curve.cost(4) - 4.0) < 0.2
    assert oc.curve.cost(1) == 1.0
    assert np.isclose(oc.curve.cost(8), 1 + 2 * oc.factor)


def test_pld_follows_the_occurrence_that_matches_furthest_back():
    copy_source = [50, 51, 52, 53, 1, 2, 3, 4, 60, 61, 62]  # the text being copied
    chance = [70, 71, 1, 2, 3, 4, 80, 81]  # the same 4-gram later, after different words
    d = PromptLookupDrafter()
    d.begin(copy_source + chance + [50, 51, 52, 53, 1, 2, 3, 4])
    draft = d.propose(3)
    assert draft.tokens.tolist() == [60, 61, 62]  # not [80, 81, ...] from the latest occurrence
    assert draft.key >= 4  # an 8-token match, not a 4-token one


def test_join_wraps_keeps_paragraphs_and_indented_lines():
    text = "It\nis useful as a placeholder,\nbut no code.\n\n   def f(): pass\n   class C: pass\nEnd"
    joined = join_wraps(text)
    assert joined == "It is useful as a placeholder, but no code.\n\n   def f(): pass\n   class C: pass End"
    fenced = "Change\nthis:\n```python\nimport os\nimport re\n```\nthen\nstop"
    assert join_wraps(fenced) == "Change this:\n```python\nimport os\nimport re\n```\nthen stop"


def test_pld_drafts_through_a_line_wrap_of_the_prompt(engine):
    prompt = engine.tokenize("Quote this:\nThe pass statement is useful as a placeholder when a\n"
                             "statement is required syntactically, but no code needs to run.\n", add_special=False)
    said = engine.tokenize("Sure: The pass statement is useful as a placeholder when a", add_special=False)
    plain = PromptLookupDrafter()
    plain.begin(prompt)
    plain.extend(said)
    assert engine.detokenize(plain.propose(4).tokens).startswith("\n")  # the raw prompt breaks the quote
    joined = PromptLookupDrafter(rewrap=lambda tokens: rewrapped_tokens(engine, tokens))
    joined.begin(prompt)
    joined.extend(said)
    assert engine.detokenize(joined.propose(8).tokens).startswith(" statement is required synt")
    unwrapped = engine.tokenize("No wraps here.", add_special=False)
    assert rewrapped_tokens(engine, unwrapped) is None


def test_joined_prompt_aligns_raw_and_joined_tokens(engine):
    from sense_local.speculative.rewrap import JoinedPrompt

    prompt = engine.tokenize("Quote this:\nThe pass statement is useful as a placeholder when a\n"
                             "statement is required syntactically.\n", add_special=False)
    joined = JoinedPrompt(engine, prompt)
    assert "\n" not in engine.detokenize(joined.tokens).strip()
    aligned = np.flatnonzero(joined.at >= 0)
    assert len(aligned) >= len(prompt) - 4  # only the tokens around the two wraps lose their match
    raw_text = engine.detokenize(prompt)
    for i in aligned:  # an aligned pair ends at the same place of the (same-length) texts
        raw_end = len(engine.detokenize(prompt[: i + 1]))
        assert len(engine.detokenize(joined.tokens[: joined.at[i] + 1])) == raw_end
    assert engine.detokenize(joined.tokens) == raw_text.replace("\n", " ", 2)
    assert len(JoinedPrompt(engine, engine.tokenize("No wraps.", add_special=False)).tokens) == 0


def test_pooled_estimate_shares_what_one_key_learned():
    from sense_local.speculative.drafters.base import AcceptanceEstimate

    priors = {(s, x): 0.5 for s in range(2) for x in range(2)}
    pooled = AcceptanceEstimate(priors, pool=lambda key: key[1])
    alone = AcceptanceEstimate(priors)
    for est in (pooled, alone):
        for _ in range(20):
            est.observe((0, 1), 8, 8)  # long drafts accepted whole under key (0, 1)
    assert pooled.get((1, 1)) > 0.7 and alone.get((1, 1)) == 0.5  # same pool: learned; alone: prior
    assert pooled.get((1, 0)) == 0.5  # another pool is untouched
    assert pooled.get((0, 1)) > 0.9


def test_pooled_estimate_counts_a_keys_own_evidence_once():
    """A key's pool is the prior it is shrunk towards: the pool's share of the key's own drafts is
    left out, so one lucky draft moves a key alone in its pool no further than an unpooled key."""
    from sense_local.speculative.drafters.base import AcceptanceEstimate

    priors = {(s, x): 0.25 for s in range(2) for x in range(2)}
    pooled = AcceptanceEstimate(priors, pool=lambda key: key[1])
    alone = AcceptanceEstimate(priors)
    for est in (pooled, alone):
        est.observe((0, 1), 3, 3)
    assert abs(pooled.get((0, 1)) - alone.get((0, 1))) < 1e-9
    assert pooled.get((1, 1)) > 0.25  # a neighbour in the pool still learns from it
    pooled.observe((1, 1), 3, 0)  # the neighbour's miss pulls the first key's pool down
    assert pooled.get((0, 1)) < alone.get((0, 1))


def test_first_tokens_scored_alone_say_nothing_of_the_run_after_them():
    """Split, a proposal scored on its first token (the loop's shadow, SENSE's rivals) moves the
    first token's estimate only; a verified draft's later tokens move the run's. Counted together,
    first-token hits raised the whole chain's estimate."""
    from sense_local.speculative.drafters.base import AcceptanceEstimate

    priors = {0: 0.75}
    split, together = AcceptanceEstimate(priors, split_first=True), AcceptanceEstimate(priors)
    for est in (split, together):
        for _ in range(6):
            est.observe(0, 1, 1)  # six shadows whose first token was right
    assert split.first(0) > 0.85 and split.get(0) == 0.75  # the run still at its prior
    assert together.get(0) > 0.85  # unsplit: the same hits promise the whole chain
    chain = split.chain(0, 4)
    assert np.allclose(chain, split.first(0) * 0.75 ** np.arange(4))
    split.observe(0, 15, 2)  # a long draft: its first token and one more accepted, then a miss
    assert split.get(0) < 0.75 < split.first(0)
    split.priors = {0: 0.5}  # a replay's variant sets both
    assert split.first_tokens.priors == {0: 0.5}


def test_free_verification_drafts_every_proposal_in_full(engine):
    """--free-verification sizes drafts on a flat curve: nothing is held back for cost, so on the
    same prompt it verifies at least as many draft tokens as the measured curve lets through."""
    from conftest import chat
    from sense_local.generation import GenerationOptions, make_decoder
    from sense_local.speculative.cost import FLAT

    prompt = chat(engine, "Repeat exactly: the quick brown fox jumps over the lazy dog, then the lazy dog "
                          "sleeps while the quick brown fox runs away into the dark green forest.")
    drafted = {}
    for free in (False, True):
        decoder = make_decoder(engine, GenerationOptions(method="pld", max_tokens=48, free_verification=free))
        assert (decoder.cost.prior is FLAT) == free
        list(decoder.generate(prompt, 48))
        drafted[free] = decoder.stats.drafted
    assert drafted[True] >= drafted[False] and drafted[True] > 0


# the two models' measured curves (2 CPU cores): the 135M's is steep, the 1.5B's flatter
STEEP = CostCurve((1, 2, 3, 4, 6, 8, 12, 16, 24, 32), (1.0, 1.33, 1.76, 2.1, 2.97, 3.63, 5.19, 7.22, 10.0, 13.46))
FLATTER = CostCurve((1, 2, 3, 4, 6, 8, 12, 16, 24, 32), (1.0, 1.48, 1.92, 1.92, 2.72, 3.17, 3.88, 3.88, 5.82, 6.8))


def _first_draft_at(match: int, curve: CostCurve) -> tuple[int, int]:
    """(match bucket, tokens the loop would verify) of the first draft after a copy of `match` tokens."""
    text = list(range(100, 200))
    d = PromptLookupDrafter()
    d.begin(text + [7, 8] + text[:match])
    draft = d.propose(32)
    return draft.key, curve.best_length(draft.acceptance, len(draft.tokens))


def test_a_full_length_match_drafts_long_where_a_shorter_copy_drafts_with_care():
    # a 32-token match is a copy under way: its first draft runs past 16 tokens on the flatter curve
    key, flatter = _first_draft_at(40, FLATTER)
    assert key == 6 and flatter > 16
    # a 16-31 token match is where a weaker model's copy ends: under 16 tokens on either curve
    key, steep = _first_draft_at(20, STEEP)
    assert key == 5 and 0 < steep < 16 and 0 < _first_draft_at(20, FLATTER)[1] < 16


def test_replay_accepts_drafts_exactly_where_they_match_the_recording():
    from benchmarks.replay_bench import replay

    source = list(range(100, 160))
    output = source[:40] + [5, 6, 7] + source[40:50]  # a copy, an edit, the copy resumed
    task = {"name": "copy", "prompt": [1, 2] + source + [3, 4], "joined": None, "output": output, "eos": True}
    tokens, forwards, modeled, _ = replay(task, FLATTER, dict(PRIORS))
    assert tokens == len(output) and forwards < tokens / 3  # the copy went in long drafts
    assert len(output) / modeled > 1.9  # and paid on this curve (the copy resumed after the edit is
    # drafted one token first: a first token right says nothing yet of the run after it)


def test_joined_prompt_keeps_the_templates_control_tokens_in_place(engine):
    """Wraps are joined between the template's control tokens, never across them: the joined prompt
    ends with the same end of turn and role as the raw one, so a copy of the prompt's end drafts the
    end of turn (where the loop cuts a draft), not the next role's name."""
    from sense_local.chat_template import chat_tokens

    prompt = chat_tokens(engine, [{"role": "user", "content": "Quote this:\nThe pass statement is a\nplaceholder."}])
    joined = rewrapped_tokens(engine, prompt)
    special = engine.special_mask
    assert [t for t in joined if special[t]] == [t for t in prompt if special[t]]
    assert joined[-4:] == prompt[-4:]  # "...<|im_end|>\n<|im_start|>assistant\n" (the template's tail)
    assert "statement is a placeholder" in engine.detokenize(joined)


def test_a_proposal_is_built_only_as_far_as_its_tokens_could_count():
    """A chance match (one token, prior 0.2) is proposed a few tokens long however much room there
    is; a copy under way (32 tokens matching, 0.99) as long as asked: tokens each under USEFUL to be
    accepted are not built (base.AcceptanceEstimate.chain with useful)."""
    text = list(range(100, 200))
    d = PromptLookupDrafter()
    d.begin([5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107, 108, 9, 9, 100])  # only "100" matches
    chance = d.propose(63)
    assert chance.key == 0 and chance.tokens.tolist() == [101, 102][: len(chance.tokens)] and len(chance.tokens) <= 3
    assert chance.path_probs[-1] >= USEFUL > chance.path_probs[-1] * chance.acceptance
    d.begin(text + [7, 8] + text[:40])
    copy = d.propose(50)
    assert copy.key == 6 and copy.tokens.tolist() == text[40:90]
    d.cheap_verification(True)  # a GPU's curve: SENSE grafts its tree around the whole proposal
    d.begin([5, 6, 7, 100, 101, 102, 103, 104, 105, 106, 107, 108, 9, 9, 100])
    assert d.propose(63).tokens.tolist() == list(range(101, 109)) + [9, 9, 100]


def test_a_chain_under_the_curves_floor_is_never_one_the_policy_would_verify():
    """cost.chain_floor lets the loop turn a proposal down without the policy's arrays: on both
    models' curves and a flat one, no geometric chain under the floor gets a length from
    best_chain_size, and the floor is not so low that it turns nothing down on a CPU curve."""
    rng = np.random.default_rng(0)
    for curve in (STEEP, FLATTER, FLAT_CURVE):
        for _ in range(3000):
            run, first, n = rng.uniform(0, 1), rng.uniform(0, 1), int(rng.integers(1, 64))
            if first < curve.chain_floor(run):
                for head_usual in (True, False):  # the loop's reading of a geometric chain, and the other
                    assert curve.best_chain_size(first * run ** np.arange(n), run, head_usual) == 0
    assert STEEP.chain_floor(PRIORS[0]) > PRIORS[0] and FLATTER.chain_floor(PRIORS[0]) > PRIORS[0]  # a 1-token match
    assert FLAT_CURVE.chain_floor(0.2) < 0.05  # on a flat curve (a GPU) nearly every proposal may go


def test_a_geometric_chains_first_token_estimate_is_not_a_doubt():
    """Prompt lookup and SENSE estimate a chain's first token apart from its run, often lower: read
    as a doubt about that token, the policy weighed every length against a sure run that never
    came and drafted nothing; as the chain's usual head it is sized by tokens per cost. A doubt
    after the head (a token past a copy's stop) is still one. The curve: the 1.5B's on the AMD
    EPYC, whose 16-row decode costs less than a 13-row one."""
    epyc = CostCurve((1, 2, 4, 8, 12, 13, 16, 32, 48), (1.0, 1.899, 3.104, 5.098, 6.441, 6.913, 6.204, 9.666, 13.717))
    path = 0.8 * 0.9 ** np.arange(15)
    assert epyc.best_chain_size(path, 0.9, head_usual=True) == epyc.best_size(path) == 15
    assert epyc.best_chain_size(path, 0.9) == 0  # its head read as a doubt: nothing drafted
    copy = 0.924 * 0.976 ** np.arange(48)
    copy[9:] *= 0.1  # a passage ends 9 tokens on (docqa-rag-del's step)
    assert epyc.best_chain_size(copy, 0.976, head_usual=True) == 9 and epyc.best_chain_size(copy, 0.976) == 0
    for curve in (STEEP, FLATTER):
        assert curve.best_chain_size(path, 0.9, head_usual=True) == curve.best_size(path)


FLAT_CURVE = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.0, 1.02, 1.05, 1.1, 1.2))
