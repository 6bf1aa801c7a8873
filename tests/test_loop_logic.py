"""Loop bookkeeping on the fake engine: commits, truncation, accounting, stops, provenance."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from fakes import FakeEngine, greedy_reference
from sense_local.spec.cost import FLAT, CostCurve
from sense_local.spec.drafters.base import Drafter
from sense_local.spec.loop import SpecDecoder
from sense_local.spec.types import TARGET, Draft

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
        assert stats.tau == pytest.approx(stats.tokens / stats.forwards)


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
