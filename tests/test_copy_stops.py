"""A copy of a grounded prompt's passage is doubted past where the passage ends, and a match of an earlier
reply counts from its start (speculative/copy_stops.py)."""
from __future__ import annotations

import bisect

import numpy as np
from conftest import chat
from sense_local.chat_template import chat_tokens
from sense_local.datastore.passages import PassageRow
from sense_local.grounding.prompt import grounded_message
from sense_local.grounding.retrieve import PassageHit
from sense_local.speculative.copy_stops import copy_stops, reply_starts
from sense_local.speculative.cost import PRIOR
from sense_local.speculative.drafters.pld import MATCH_BUCKETS, PromptLookupDrafter
from sense_local.speculative.methods import get_method
from sense_local.speculative.speculator import Speculator

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


EARLIER = "Use the standard library's `csv` module: open the file and read it with `csv.DictReader`."


def two_turns(engine) -> tuple[list[int], list[int]]:
    """(a follow-up's prompt, its earlier reply's tokens as they stand in it)."""
    messages = [{"role": "user", "content": "How do I read a CSV file in Python?"},
                {"role": "assistant", "content": EARLIER},
                {"role": "user", "content": "And how do I skip its header row?"}]
    prompt = chat_tokens(engine, messages)
    earlier = engine.tokenize(EARLIER, add_special=False)
    assert any(prompt[i : i + len(earlier)] == earlier for i in range(len(prompt)))
    return prompt, earlier


def test_the_reply_starts_are_where_each_earlier_reply_begins(engine):
    prompt, _ = two_turns(engine)
    starts = reply_starts(prompt, engine.special_mask)
    assert [engine.detokenize(prompt[i:])[:20] for i in starts] == [EARLIER[:20]]
    assert reply_starts(chat(engine, "How do I read a CSV file in Python?"), engine.special_mask) == []  # one turn


def test_a_reply_beginning_as_an_earlier_one_matches_from_its_own_start(engine):
    """"Use the" matches the earlier reply back through the header the two replies share: prompt
    lookup as the product makes it counts the two tokens of the reply, not the header's too (it
    drafted 15 tokens at its 8-15-token prior there, and the 135M kept 0-3)."""
    prompt, earlier = two_turns(engine)
    own = 2  # "Use the"
    assert engine.detokenize(earlier[:own]) == "Use the"
    bucket = bisect.bisect_right(MATCH_BUCKETS, own)
    made = Speculator(engine, None, remember_cost=False).drafter_for(get_method("pld"))
    free = PromptLookupDrafter()
    for d in (made, free):
        d.begin(prompt)
        d.extend(earlier[:own])
    assert free.propose(63).key > bucket  # the header counted: a longer match
    draft = made.propose(63)
    assert draft.key == bucket and draft.tokens[0] == earlier[own]  # the same place, at its own length


def test_sense_counts_a_neighbours_lexical_agreement_from_the_replys_start(engine):
    """SENSE's neighbour at the earlier reply's second token agrees with the query on the reply's
    own token, not on the header before it (its lexical bucket set the neighbours' 0.89 at the
    135M's chat-3 start, where it kept 1 of 15). The context search is stood in for by that one
    neighbour."""
    from sense_local.speculative.drafters.sense import SenseDrafter

    prompt, earlier = two_turns(engine)
    start = reply_starts(prompt, engine.special_mask)[0]
    d = SenseDrafter(engine, use_context=True, rewrap=False)
    d.begin(prompt)
    d.extend(earlier[:2])

    class OneNeighbour:
        def __len__(self):
            return 1

        def search(self, query, k):
            return np.array([start]), np.array([0.99], np.float32)  # the state that chose earlier[1]
    d.context = OneNeighbour()
    conts, _, lex, _ = d._proposals(np.zeros(engine.n_embd, np.float32), int(earlier[1]), True, [])
    assert conts[0, 0] == earlier[2] and lex.tolist() == [1]
    d._reply_start = 0  # as before: the header agreed too
    assert d._proposals(np.zeros(engine.n_embd, np.float32), int(earlier[1]), True, [])[2][0] > 4
