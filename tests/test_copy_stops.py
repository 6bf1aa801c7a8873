"""A copy of a grounded prompt's passage is doubted past where the passage ends (speculative/copy_stops.py)."""
from __future__ import annotations

import numpy as np
from conftest import chat
from sense_local.datastore.passages import PassageRow
from sense_local.grounding.prompt import grounded_message
from sense_local.grounding.retrieve import PassageHit
from sense_local.speculative.copy_stops import copy_stops
from sense_local.speculative.cost import PRIOR
from sense_local.speculative.drafters.pld import PromptLookupDrafter

FIRST = ('"pass" is a null operation -- when it is executed, nothing happens. It is useful as a placeholder '
         "when a statement is required syntactically, but no code needs to be executed, for example:")
SECOND = "Changed in version 3.8: Prior to Python 3.8, a continue statement was illegal in the finally clause."


def grounded_prompt(engine) -> list[int]:
    hits = [PassageHit(PassageRow(i, path, 0, 0, 0, 1, 0, text), 1.0)
            for i, (path, text) in enumerate([("pass.txt", FIRST), ("try.txt", SECOND)])]
    message, _, _ = grounded_message(engine, "What does pass do?", hits)
    return chat(engine, message)


def test_the_stops_are_where_the_next_passage_and_the_question_start(engine):
    prompt = grounded_prompt(engine)
    stops = copy_stops(engine, prompt)
    after = [engine.detokenize(prompt[i:]).lstrip("\n") for i in stops]
    assert [a[:12] for a in after] == ["[1] pass.txt", "[2] try.txt,", "Question: Wh"]
    assert copy_stops(engine, chat(engine, FIRST + "\n\n" + SECOND)) == []  # no passages: no stops


def _drafter(engine, stops: bool) -> PromptLookupDrafter:
    return PromptLookupDrafter(stops=(lambda tokens: copy_stops(engine, tokens)) if stops else None)


def test_a_copy_of_a_passage_is_doubted_past_its_end(engine):
    """The draft runs on into the next passage's header, but from the stop on at a tenth of the
    chance: sized on a CPU's curve it ends with the passage (a decode padded past it may still
    carry the header for nothing); the same tokens undoubted are drafted on past it."""
    prompt = grounded_prompt(engine)
    first, second = copy_stops(engine, prompt)[:2]
    free, stopped = _drafter(engine, False), _drafter(engine, True)
    for d in (free, stopped):
        d.begin(prompt)
        d.extend(prompt[first : second - 6])  # the answer has quoted passage 1, its header first, to 6 tokens from its end
    loose, doubted = free.propose(63), stopped.propose(63)
    assert loose.tokens.tolist() == doubted.tokens.tolist()  # the same tokens, on into [2]
    assert "[2] try.txt" in engine.detokenize(doubted.tokens.tolist())
    own = doubted.path_probs / np.concatenate(([1.0], doubted.path_probs[:-1]))  # each token's chance after those before
    assert int(np.flatnonzero(own < 0.5)[0]) == 6  # the first doubted token: the one after the passage
    assert engine.detokenize(doubted.tokens[:6].tolist()).endswith(("for example:", "for example:\n\n"))
    assert np.allclose(doubted.path_probs[:6], loose.path_probs[:6]) and doubted.geometric and loose.geometric
    assert 0 < PRIOR.best_chain_size(doubted.path_probs, doubted.acceptance, head_usual=True) <= 6  # to the passage's end
    assert PRIOR.best_chain_size(loose.path_probs, loose.acceptance, head_usual=True) > 6  # undoubted: on past it


def test_past_the_end_of_a_passage_a_match_counts_only_from_its_end(engine):
    """The answer quoted passage 1 to its end and wrote what starts the next part: the lookup finds
    passage 2's header there, but as a match of the tokens since the stop (a chance match), not as
    the continuation of the long copy before it."""
    prompt = grounded_prompt(engine)
    first, second = copy_stops(engine, prompt)[:2]
    free, stopped = _drafter(engine, False), _drafter(engine, True)
    for d in (free, stopped):
        d.begin(prompt)
        d.extend(prompt[first : second + 1])  # passage 1 quoted whole, then the first token after it
    assert free.propose(63).key >= 5  # a copy of 16+ tokens under way
    assert stopped.propose(63).key <= 1  # a match of the token or two since the stop
