"""Prompt lookup follows a copy through an edit (drafters/follower.py): a renamed token learned once
is drafted renamed at its later occurrences; a replacement a verification rejects is forgotten. Token ids stand for words."""
from __future__ import annotations

from sense_local.speculative.drafters.follower import Follower
from sense_local.speculative.drafters.pld import PRIORS, PromptLookupDrafter
from sense_local.speculative.types import Feedback

X, Y = 900, 901  # the source's name and the output's new name for it
BODY = list(range(100, 112))  # a stretch the output copies before the first edit


def confident() -> PromptLookupDrafter:
    """Prompt lookup sure of every match: a proposal is as long as asked (a 1-token match at its
    prior would be cut to the tokens worth building, base.AcceptanceEstimate.chain with useful)."""
    d = PromptLookupDrafter()
    d.estimate.priors = {key: 0.99 for key in PRIORS}
    return d


def source() -> list[int]:
    """`BODY X 1 2 3 X 4 5 6 X 7 8`: X three times after a long copyable stretch."""
    return BODY + [X, 1, 2, 3, X, 4, 5, 6, X, 7, 8]


def test_a_rename_learned_once_is_drafted_at_every_later_occurrence():
    d = confident()
    d.begin([50, 51] + source() + [60, 61])
    d.extend(BODY[:2])
    assert d.propose(4).tokens.tolist() == BODY[2:6]  # the lookup finds the copy
    d.extend(BODY[2:])
    assert d.run == len(BODY) and d.follower.synced
    assert d.propose(2).tokens.tolist() == [X, 1]
    d.extend([Y])  # the output renames X
    assert not d.follower.synced
    d.extend([1])  # and goes on with the source: Y replaced X
    assert d.follower.replaced == {(X,): (Y,)} and d.follower.synced and d.run == 1
    draft = d.propose(8)
    assert draft.tokens.tolist() == [2, 3, Y, 4, 5, 6, Y, 7]  # later X's are drafted as Y
    d.update(Feedback(draft, 8))
    d.extend(draft.tokens.tolist())
    assert d.run == 9  # tokens made by the replacement go on with the run: the copy is under way


def test_the_follower_alone_drafts_the_replacement_and_without_it_the_old_name():
    """The follower on its own (as Predicted Outputs uses it): the rename learned, later X drafted
    as Y; with its replacements forgotten, the source as it is (the control)."""
    f = Follower(source())
    f.place(0)
    out: list[int] = []
    for t in BODY + [Y, 1]:
        out.append(t)
        f.step(t, out)
    assert f.ahead(8) == [2, 3, Y, 4, 5, 6, Y, 7]
    f.replaced.clear()
    assert f.ahead(8) == [2, 3, X, 4, 5, 6, X, 7]


def test_a_replacement_rejected_where_it_was_made_is_forgotten():
    d = confident()
    d.begin([50, 51] + source() + [60, 61])
    d.extend(BODY[:2])
    d.propose(4)
    d.extend(BODY[2:] + [Y, 1])
    draft = d.propose(8)
    assert draft.tokens.tolist()[2] == Y
    d.update(Feedback(draft, 2))  # the target kept X at its second occurrence: not a rename
    assert d.follower.replaced == {}
    d.extend([2, 3, X])
    assert d.propose(3).tokens.tolist() == [4, 5, 6]  # the copy goes on with the source as it is


def test_a_replacement_never_involves_the_templates_control_tokens():
    """A code reply opens "```python" where the pasted function closed "```<|im_end|>": the output
    left the prompt's end there and came back. With END fixed nothing is learned, so a later copy of
    the prompt's end still drafts the end of turn (the loop cuts a draft there); without, "python"
    stands for END (the control)."""
    END, FENCE, PY, NL, START, ROLE = 999, 998, 997, 996, 995, 994
    prompt = BODY + [NL, FENCE, END, NL, START, ROLE, NL]  # the pasted function, its fence, the template's tail
    for fixed, learned in ((lambda t: t == END, {}), (None, {(END,): (PY,)})):
        d = PromptLookupDrafter(fixed=fixed)
        d.begin(prompt)
        d.extend([FENCE])  # the reply opens a fence: the lookup places the cursor at the prompt's
        d.propose(4)
        d.extend([PY, NL])  # "python" where the prompt had the end of turn, then back in step
        assert d.follower.replaced == learned
        d.extend(BODY)  # the function copied again, up to its end
        draft = d.propose(3).tokens.tolist()
        assert draft == ([NL, FENCE, END] if fixed else [NL, FENCE, PY])


def test_a_rename_that_adds_to_a_word_is_doubted_where_it_adds():
    """` x` renamed ` x` `_coord`: a draft making it and one keeping the word differ only at the
    token after ` x`, so that is where the doubt is (on ` x` a reply that renamed would look as if
    it had kept the word)."""
    f = Follower([1, 2, 3, 4])
    f.place(0)
    f.replaced[(2,)] = (2, 9)
    assert f.ahead(8) == [1, 2, 9, 3, 4] and f.replaced_in_ahead == [(2, 1)]
    f.declined = lambda i: True
    assert f.ahead(8) == [1, 2, 3, 4] and f.declined_in_ahead == [(2, 1)]
