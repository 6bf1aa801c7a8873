"""The speculator (issue 34): what speculative decoding keeps across a conversation's replies, and the
one-way data flow: a drafter drafts from what the loop hands it, never from the engine."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from sense_local.speculative import cost
from sense_local.speculative.cost import PRIOR, CostCurve, CurveMemory, OnlineCost


def learned_reply() -> OnlineCost:
    """An OnlineCost that timed a reply's worth of drafts at twice PRIOR's extra cost."""
    oc = OnlineCost(PRIOR)
    steep = CostCurve(PRIOR.lengths, tuple(1.0 + 2.0 * (c - 1.0) for c in PRIOR.costs))
    for i in range(80):
        k = 1 if i % 4 == 0 else 9
        oc.observe(k, 0.1 * steep.cost(k))
    assert oc.observed >= cost.LEARNED_AFTER
    return oc


def test_a_conversations_curve_memory_keeps_what_a_reply_learned(cost_curve_file):
    memory = CurveMemory(None, remember=True)
    assert memory.curve == PRIOR and not cost_curve_file.exists()  # nothing known: the prior, nothing measured
    memory.learned(learned_reply())
    assert memory.curve.cost(9) == pytest.approx(1.0 + 2.0 * (PRIOR.cost(9) - 1.0), rel=0.02)
    assert cost.cost_curve_for(None) == memory.curve  # on disk as kept, unrounded: the next run starts there


def test_a_one_off_decoders_memory_keeps_nothing(cost_curve_file):
    memory = CurveMemory(None, remember=False)
    memory.learned(learned_reply())
    assert memory.curve == PRIOR and not cost_curve_file.exists()


def test_a_measured_curve_is_not_replaced_by_a_learned_one(cost_curve_file):
    measured = CostCurve(PRIOR.lengths, tuple(1.0 + 0.5 * (c - 1.0) for c in PRIOR.costs))
    cost._write(cost_curve_file, measured, "measured")
    memory = CurveMemory(None, remember=True)
    memory.learned(learned_reply())
    assert memory.curve == measured == cost.cost_curve_for(None)


def test_sense_drafts_only_from_the_key_states_it_is_handed(engine):
    from sense_local.speculative.drafters.sense import SenseDrafter
    from sense_local.speculative.types import CommittedKeys

    prompt = chat(engine, "Repeat: the keeper climbed the spiral stairs every night to light the lamp.")
    said = engine.tokenize(" the keeper climbed the spiral", add_special=False)
    engine.reset()
    engine.eval(prompt + said[:-1], 0, outputs="last", with_keys=True)  # the target chose said[-1]
    drafter = SenseDrafter(engine, use_context=True, rewrap=False)
    assert not hasattr(drafter, "engine")
    drafter.begin(prompt)
    drafter.extend(said)
    assert drafter.propose(8) is None  # no key states handed: nothing to search with
    keys = engine.committed_keys(engine.n_past)
    drafter.add_keys(CommittedKeys(0, keys[:-3]))
    drafter.add_keys(CommittedKeys(len(keys) - 1, keys[-1:]))  # after a gap: not kept
    assert drafter.keys.valid == len(keys) - 3 and drafter.propose(8) is None
    drafter.add_keys(CommittedKeys(len(keys) - 3, keys[-3:]))
    draft = drafter.propose(8)
    assert draft is not None and engine.detokenize(draft.tokens).startswith(" stairs")


def test_a_conversation_keeps_one_speculator_and_lends_its_buffers(engine):
    from sense_local.conversation import Conversation, Finished
    from sense_local.generation import GenerationOptions

    conv = Conversation(engine)
    speculator = conv.speculator
    options = GenerationOptions(method="sense", max_tokens=12)
    drafters = []
    for question in ("Say: one two three four five.", "Say: six seven eight nine ten."):
        events = list(conv.reply([{"role": "user", "content": question}], options=options))
        assert isinstance(events[-1], Finished)
        drafters.append(speculator.drafter.inner)  # the method's own drafter (PastedCode wraps every one)
    assert conv.speculator is speculator and drafters[0] is not drafters[1]  # a new drafter each reply ...
    first, second = drafters
    assert first.keys is second.keys is speculator.key_states()  # ... in the speculator's buffers
    assert first.context is second.context is speculator.context_store()
    assert np.array_equal(speculator.key_states().upto(engine.n_past - 1), engine.committed_keys(engine.n_past - 1))
