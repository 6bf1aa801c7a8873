"""Loop bookkeeping on the fake engine: commits, truncation, accounting, stops, provenance."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fakes import FakeEngine, greedy_reference
from sense_local.speculative.cost import FLAT, CostCurve
from sense_local.speculative.drafters.base import Drafter
from sense_local.speculative.loop import SpecDecoder
from sense_local.speculative.types import TARGET, Draft
from sense_local.speculative.verify import AcceptanceRule

PROMPT = [5, 9, 13, 2]


class ScriptedDrafter(Drafter):
    """Proposes `good` correct tokens followed by `bad` wrong ones, with a fixed acceptance claim."""

    name = "scripted"

    def __init__(self, good: int, bad: int, acceptance: float = 0.9, eos_at=None):
        self.good, self.bad, self.acceptance, self.eos_at = good, bad, acceptance, eos_at
        self.feedback = []

    def begin(self, prompt):
        self.ctx = list(prompt)

    def extend(self, tokens):
        self.ctx.extend(int(t) for t in tokens)

    def propose(self, max_len):
        # the last context token is chosen but not yet evaluated: continue the reference from it
        ref = greedy_reference(self.ctx, self.good, self.eos_at)
        wrong = [(t + 1) % 64 or 2 for t in greedy_reference(self.ctx, self.good + self.bad, self.eos_at)[self.good :]]
        tokens = (ref + wrong)[:max_len]
        if not tokens:
            return None
        return Draft(np.array(tokens, np.int32), self.name, self.acceptance)

    def update(self, feedback):
        self.feedback.append(feedback.accepted)


def run(drafter, max_tokens=40, cost=FLAT, eos_at=None, cancel=None):
    eng = FakeEngine(eos_at=eos_at)
    dec = SpecDecoder(eng, method="t", drafter=drafter, cost=cost)
    events = list(dec.generate(PROMPT, max_tokens, cancel=cancel))
    return eng, dec.stats, events


def test_ar_matches_reference_and_counts_one_forward_per_token():
    eng, stats, events = run(None, 30, cost=None)
    assert [e.token for e in events] == greedy_reference(PROMPT, 30)
    assert stats.tokens == stats.forwards == 30 and stats.tau == 1.0
    assert all(e.source == TARGET for e in events)


class CountingRule(AcceptanceRule):
    """The acceptance rule, counting the rows it was asked to judge."""

    def __call__(self, logits, draft, rng, support=0.0):
        self.judged.append(len(logits))
        return super().__call__(logits, draft, rng, support)


def test_a_step_without_a_draft_is_one_token_decoded_and_its_argmax_unless_the_rule_must_judge_it():
    eng, stats, events = run(None, 30, cost=None)
    assert eng.one_token_steps == stats.forwards - 1 == 29  # every step after the prefill's token
    for temperature, judged in ((0.0, [1]), (1e-6, [1] * 30)):  # greedy: only the prefill's row; sampling draws each
        eng, rule = FakeEngine(), CountingRule(temperature=temperature)
        object.__setattr__(rule, "judged", [])
        events = list(SpecDecoder(eng, method="ar", rule=rule, logprobs=2).generate(PROMPT, 30))
        assert [e.token for e in events] == greedy_reference(PROMPT, 30)
        assert all(e.logprob is not None and len(e.logprob.top) == 2 for e in events)  # read off the same row
        assert eng.one_token_steps == 29 and rule.judged == judged


def test_recording_top2_gaps_is_left_out_of_the_replys_time(monkeypatch):
    """The bench records ar's top-2 gaps (the lossless check reads them): ~70 us a token after a
    decode, ~1% of the 135M's. That is the bench measuring, not the reply's work, so it is not in
    t_total: here each gap takes 10 s of a fake clock that nothing else moves."""
    import types

    from sense_local.speculative import loop

    clock = [0.0]

    def slow_gap(row):
        clock[0] += 10.0
        return 1.0

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(loop, "top2_gap", slow_gap)
    dec = SpecDecoder(FakeEngine(), method="ar", record_gaps=True)
    events = list(dec.generate(PROMPT, 12))
    assert [e.token for e in events] == greedy_reference(PROMPT, 12)
    assert dec.stats.top2_gaps == [1.0] * 12  # the prefill's and every decode's
    assert clock[0] == 120.0 and dec.stats.t_total == 0.0  # the eleven decodes' gaps: not the reply's time


@pytest.mark.parametrize("good, bad", [(6, 0), (3, 3), (0, 4), (10, 1)])
def test_drafted_output_equals_greedy_whatever_the_draft_quality(good, bad):
    eng, stats, events = run(ScriptedDrafter(good, bad), 40)
    assert [e.token for e in events] == greedy_reference(PROMPT, 40)
    assert stats.tokens == 40
    assert stats.accepted == sum(e.source == "scripted" for e in events)
    assert stats.accepted <= stats.drafted
    assert eng.tokens[: len(PROMPT)] == PROMPT
    if good > 0:
        assert stats.forwards < stats.tokens  # drafts paid off in forwards


def test_max_tokens_is_exact_even_inside_an_accepted_draft():
    for n in (1, 2, 7, 13):
        _, stats, events = run(ScriptedDrafter(8, 0), n)
        assert len(events) == n == stats.tokens
        assert stats.stop_reason == "length"


def test_eos_inside_a_draft_stops_without_emitting_it():
    eos_at = len(PROMPT) + 5  # the token after generated position 5 is EOS
    ref = greedy_reference(PROMPT, 40, eos_at=eos_at)
    _, stats, events = run(ScriptedDrafter(8, 0, eos_at=eos_at), 40, eos_at=eos_at)
    assert [e.token for e in events] == ref and len(ref) == 6
    assert stats.stop_reason == "eos"


def test_steep_cost_curve_stops_drafting_unlikely_drafts():
    steep = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.9, 3.0, 5.0, 9.0, 17.0))
    _, stats, _ = run(ScriptedDrafter(0, 4, acceptance=0.3), 30, cost=steep)
    assert stats.drafted == 0  # a 30% draft never pays on this curve
    _, stats, _ = run(ScriptedDrafter(8, 0, acceptance=0.97), 30, cost=steep)
    assert stats.drafted > 0 and stats.forwards < 30


def test_the_drafter_is_told_each_reply_whether_verification_is_cheap():
    """Flat (a GPU, --free-verification): cheap; the steep CPU curve above: not."""
    told = []

    class Listening(ScriptedDrafter):
        def cheap_verification(self, cheap):
            told.append(cheap)

    steep = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.9, 3.0, 5.0, 9.0, 17.0))
    for cost in (FLAT, steep):
        run(Listening(4, 0), 8, cost=cost)
    assert told == [True, False]


def test_a_geometric_chain_under_the_curves_floor_is_scored_but_never_verified():
    """A proposal whose first token's chance is under the curve's floor (cost.chain_floor) goes to
    the shadow without a decode of it; the same chain just over the floor's acceptance is verified."""
    steep = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.9, 3.0, 5.0, 9.0, 17.0))

    class Geometric(ScriptedDrafter):
        def propose(self, max_len):
            d = super().propose(max_len)
            first = self.first
            return Draft(d.tokens, d.source, d.acceptance, path_probs=first * d.acceptance ** np.arange(len(d.tokens)),
                         geometric=True)

    low, high = Geometric(8, 0, acceptance=0.97), Geometric(8, 0, acceptance=0.97)
    low.first, high.first = steep.chain_floor(0.97) * 0.99, 0.97
    _, stats, events = run(low, 30, cost=steep)
    assert stats.drafted == 0 and [e.token for e in events] == greedy_reference(PROMPT, 30)
    _, stats, _ = run(high, 30, cost=steep)
    assert stats.drafted > 0


def test_cancel_stops_cleanly():
    cancel = threading.Event()
    eng = FakeEngine()
    dec = SpecDecoder(eng, method="t", drafter=ScriptedDrafter(2, 1), cost=FLAT)
    out = []
    for ev in dec.generate(PROMPT, 100, cancel=cancel):
        out.append(ev.token)
        if len(out) == 5:
            cancel.set()
    assert dec.stats.stop_reason == "cancelled" and 5 <= len(out) < 100
    assert out == greedy_reference(PROMPT, len(out))
    # the KV holds exactly the committed sequence (prompt + output minus the unevaluated last token)
    assert eng.tokens == PROMPT + out[:-1] or eng.tokens[: len(PROMPT) + len(out) - 1] == PROMPT + out[:-1]


def test_feedback_reports_accepted_lengths():
    drafter = ScriptedDrafter(2, 2)
    run(drafter, 20)
    fb = drafter.feedback
    assert fb and all(f <= 2 for f in fb)  # never more than the correct prefix
    assert sum(f == 2 for f in fb) >= len(fb) - 1  # only a draft cut short at the end accepts less


def synonym(token: int) -> int:
    return (token + 1) % 64 or 2


class SynonymEngine(FakeEngine):
    """Every row also rates synonym(next) almost as high as the greedy next token."""

    def _row(self, token, pos):
        row = super()._row(token, pos)
        top = int(row.argmax())
        if top != 0:
            row[synonym(top)] = 4.8
        return row


class SynonymDrafter(ScriptedDrafter):
    """Proposes a chain of synonyms: each the synonym of the target's choice after the one before."""

    def __init__(self, acceptance: float):
        super().__init__(0, 0, acceptance)

    def propose(self, max_len):
        tokens, tok, pos = [], self.ctx[-1], len(self.ctx) - 1
        for _ in range(min(6, max_len)):
            tok = synonym(greedy_reference([0] * pos + [tok], 1)[0])
            tokens.append(tok)
            pos += 1
        return Draft(np.array(tokens, np.int32), self.name, self.acceptance) if tokens else None


def soft_rule():
    from sense_local.speculative.verify import AcceptanceRule, SoftOptions, SoftVerifier

    verifier = object.__new__(SoftVerifier)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(64, 8)).astype(np.float32)
    verifier.embeddings = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float16)
    verifier.protected = np.zeros(64, bool)
    verifier.protected[0] = True
    verifier.run_char = np.full(64, -1, np.int32)
    verifier.opts = SoftOptions(min_support=0.0, confirm=0)  # synonym chains: nothing confirms, nothing is a copy
    return AcceptanceRule(soft=verifier)


def follows_synonyms(events) -> bool:
    """Whether every token after the first is the synonym of the target's choice before it."""
    ctx = list(PROMPT) + [events[0].token]
    for e in events[1:]:
        if e.token != synonym(greedy_reference(ctx, 1)[0]):
            return False
        ctx.append(e.token)
    return True


@pytest.mark.parametrize("bonus", [True, False])
def test_soft_rule_takes_the_proposal_at_the_bonus_row_for_free(bonus):
    """A proposal the cost policy does not verify (a 30% claim on a steep curve) is still judged by
    the soft gate at the row the one-token decode computes anyway: its near-synonym first token is
    taken there, at no extra decode. Without the bonus check the target's own token is."""
    steep = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.9, 3.0, 5.0, 9.0, 17.0))
    dec = SpecDecoder(SynonymEngine(), method="t", drafter=SynonymDrafter(acceptance=0.3), rule=soft_rule(),
                      cost=steep, soft_bonus=bonus)
    events = list(dec.generate(PROMPT, 20))
    stats = dec.stats
    assert stats.drafted == 0 and stats.forwards == stats.tokens == 20  # nothing verified, nothing extra
    if bonus:
        assert [e.soft for e in events] == [False] + [True] * 19  # the first comes from the prefill
        assert all(e.source == "scripted" for e in events[1:]) and stats.soft_accepted == 19
        assert follows_synonyms(events)
    else:
        assert [e.token for e in events] == greedy_reference(PROMPT, 20) and stats.soft_accepted == 0


def test_soft_bonus_row_after_a_verified_draft():
    """When every verified token stood and the proposal went on, its next token is judged at the
    bonus row: a 2-token verify yields 3 tokens per decode."""
    short = CostCurve((1, 2, 3, 4, 32), (1.0, 1.0, 1.0, 10.0, 100.0))  # drafts of 2 pay, of 3 do not
    dec = SpecDecoder(SynonymEngine(), method="t", drafter=SynonymDrafter(acceptance=0.9),
                      rule=soft_rule(), cost=short)
    events = list(dec.generate(PROMPT, 31))
    stats = dec.stats
    assert stats.drafted == 20 and stats.accepted == 20 and stats.soft_accepted == 30
    assert all(e.soft for e in events[1:]) and follows_synonyms(events)
    assert stats.forwards == 11  # the prefill, then [last + 2 drafted] -> 2 soft + 1 bonus, ten times


class PastTheEndDrafter(ScriptedDrafter):
    """Proposes the reference up to the end of the reply, its end token, and then `after` more
    tokens (what a copy of a prompt's last lines runs on into: the template's closing tokens)."""

    def __init__(self, eos_at: int, after: int):
        super().__init__(good=0, bad=0, eos_at=eos_at)
        self.after = after

    def propose(self, max_len):
        ref = greedy_reference(self.ctx, 64, self.eos_at)
        end = len(PROMPT) + len(ref)  # where the reply ends: its end token goes there
        if len(self.ctx) > end:
            return None
        tokens = ref[len(self.ctx) - len(PROMPT) :] + [0] + [3] * self.after  # 0: the fake's EOS
        return Draft(np.array(tokens[:max_len], np.int32), self.name, 0.99)


def test_a_draft_is_not_verified_past_an_end_of_generation_token():
    eos_at = len(PROMPT) + 5  # the reply is 6 tokens, then EOS
    eng, stats, events = run(PastTheEndDrafter(eos_at, after=20), eos_at=eos_at)
    assert [e.token for e in events] == greedy_reference(PROMPT, 40, eos_at)
    assert stats.stop_reason == "eos"
    assert max(eng.decodes[1:]) <= 1 + 6  # the last token, the reply's 5 more tokens and its end: not 20 past it


# c(k) with a dip at 8 (a kernel that tiles the batch by 8): 5..7 rows cost more than 8
DIPPED = CostCurve(tuple(range(1, 17)), (1.0, 1.6, 2.1, 2.6, 4.0, 4.5, 5.0, 3.2, 4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6, 5.8))


@pytest.mark.parametrize("good, bad, proposed", [(4, 0, 4), (2, 3, 5), (12, 0, 12)])
def test_a_decode_runs_at_the_cheapest_size_at_least_as_long_and_commits_only_what_it_accepted(good, bad, proposed):
    """A draft whose decode would be 5-7 rows runs as 8 (DIPPED): the proposal's own tokens fill it
    where it has them, else the rows are padding, never judged; the output stays greedy's and the KV
    cache keeps exactly the committed tokens."""
    assert [DIPPED.padded(n) for n in range(1, 10)] == [1, 2, 3, 4, 8, 8, 8, 8, 9]
    drafter = ScriptedDrafter(good, bad, acceptance=0.97)
    eng, stats, events = run(drafter, 30, cost=DIPPED)
    tokens = [e.token for e in events]
    assert tokens == greedy_reference(PROMPT, 30)
    assert eng.tokens == PROMPT + tokens[:-1] or eng.tokens == PROMPT + tokens  # the last token may be unevaluated
    assert not set(eng.decodes[1:]) & {5, 6, 7}  # never a decode of a size a longer one undercuts
    assert stats.accepted <= stats.drafted
    if proposed >= 7:
        assert 8 in eng.decodes[1:]
