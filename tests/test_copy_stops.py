"""A copy of a grounded prompt's passage stops where the passage ends (speculative/copy_stops.py)."""
from __future__ import annotations

from conftest import chat
from sense_local.datastore.passages import PassageRow
from sense_local.grounding.prompt import grounded_message
from sense_local.grounding.retrieve import PassageHit
from sense_local.speculative.copy_stops import copy_stops
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


def test_a_copy_of_a_passage_is_not_drafted_past_its_end(engine):
    prompt = grounded_prompt(engine)
    first, second = copy_stops(engine, prompt)[:2]
    free, stopped = _drafter(engine, False), _drafter(engine, True)
    for d in (free, stopped):
        d.begin(prompt)
        d.extend(prompt[first : first + 20])  # the answer starts quoting passage 1, its header first
    assert "[2] try.txt" in engine.detokenize(free.propose(63).tokens.tolist())  # without stops: on into [2]
    draft = engine.detokenize(stopped.propose(63).tokens.tolist())
    assert draft.endswith("for example:") or draft.endswith("for example:\n\n")
    assert "[2]" not in draft


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
