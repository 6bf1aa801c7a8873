"""Predicted Outputs: the text a reply will mostly repeat drafts the reply, losslessly, through the
engine, the CLI and the server (the `openai` client's `prediction`)."""
from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import openai
import pytest

from conftest import run_cli
from sense_local.generation import GenerationOptions, make_decoder, prompt_tokens
from sense_local.speculative.cost import PRIOR, CostCurve
from sense_local.speculative.drafters.pasted_code import last_code_block
from sense_local.speculative.drafters.prediction import NAMED, NAMED_PRIOR, PredictionDrafter
from sense_local.speculative.drafters.prose import prose_bytes
from sense_local.speculative.types import Draft, Feedback, GenerationStats

CODE = textwrap.dedent('''\
    def mean(values):
        total = 0
        for value in values:
            total += value
        return total / len(values)


    def spread(values):
        low = min(values)
        high = max(values)
        return high - low
    ''')
EDIT = f"Rename the parameter `values` to `numbers` everywhere in this code. Reply with the whole code only.\n```python\n{CODE}```"
PREDICTION = f"```python\n{CODE}```"


def decode(engine, options: GenerationOptions, prompt: list[int]):
    engine.reset()
    decoder = make_decoder(engine, options, record_gaps=True)
    tokens = [ev.token for ev in decoder.generate(prompt, options.max_tokens)]
    return tokens, decoder.stats


def test_a_prediction_drafts_the_edit_and_changes_nothing(engine):
    prompt = prompt_tokens(engine, EDIT)
    plain, plain_stats = decode(engine, GenerationOptions(method="ar", max_tokens=120), prompt)
    predicted, stats = decode(engine, GenerationOptions(method="ar", max_tokens=120, prediction=PREDICTION), prompt)
    gaps = np.asarray(plain_stats.top2_gaps)
    tie = np.flatnonzero(gaps < 0.25)
    n = int(tie[0]) + 1 if len(tie) else len(plain)  # identical until a near-tie
    assert predicted[:n] == plain[:n]
    assert stats.tau > 1.5 and stats.accepted > 0  # the edit was drafted from the prediction
    n_pred = len(engine.tokenize(PREDICTION, add_special=False))
    assert 0 < stats.prediction_accepted <= stats.tokens  # each output token counted once
    assert stats.prediction_accepted + stats.prediction_rejected == n_pred


def test_the_drafter_follows_leaves_and_learns_a_replacement():
    """Token ids stand for words: the prediction says `a x b x c x d`, the output writes y for x."""
    a, b, c, d, x, y = 1, 2, 3, 4, 10, 20
    drafter = PredictionDrafter([a, x, b, x, c, x, d])
    drafter.begin([99])
    assert drafter.propose(3).tokens.tolist() == [a, x, b]  # from the start
    drafter.extend([a, y])  # left the prediction at x
    drafter.extend([b])  # and came back one token later: y replaced x
    assert drafter.cursor == 3 and drafter.replaced == {(x,): (y,)}
    draft = drafter.propose(8)
    assert draft.tokens.tolist() == [y, c, y, d]  # later x's are drafted as y
    drafter.update(Feedback(draft, 4))
    drafter.extend([y, c, y, d])
    assert drafter.propose(4) is None  # the prediction is used up
    stats = GenerationStats(method="ar")
    drafter.report(stats)
    assert stats.prediction_accepted == 4 and stats.prediction_rejected == 3  # a, b, c, d followed; the x's not


def test_a_rename_learned_on_one_token_is_made_in_every_token_that_holds_the_word(engine):
    """calendar.py's `year` comes as different tokens ("(year", " year", "year" after "("): a rename
    learned where the output first wrote `yr` is drafted at the others too, and not inside a longer
    word (`years`)."""
    source = "def isleap(year):\n    return year % 4 == 0 and (year % 100 != 0)\n# years\n"
    pred = engine.tokenize(source, add_special=False)
    k = next(i for i, t in enumerate(pred) if b"year" in engine.piece(t))
    renamed = engine.tokenize(engine.piece(pred[k]).decode().replace("year", "yr"), add_special=False)
    output = pred[:k] + renamed + pred[k + 1 : k + 2]  # yr written for year, then the prediction again
    rest = engine.detokenize(pred[k + 2 :])
    assert rest.count("year") == 3, "the test's premise: two more occurrences, and `years`"
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin([1])
    drafter.extend(output)
    assert engine.detokenize(drafter.propose(64).tokens.tolist()) == re.sub(r"\byear\b", "yr", rest)
    plain = PredictionDrafter(pred)  # token by token only: the other occurrences are other tokens
    plain.begin([1])
    plain.extend(output)
    assert engine.detokenize(plain.propose(64).tokens.tolist()).count("year") >= 2


def _renamed_once(engine, source: str, old: str, new: str) -> tuple[list[int], list[int], str]:
    """(prediction tokens, an output that wrote `new` for `old` in the first token holding it and
    then went on with the prediction for one token, the prediction's text after that)."""
    pred = engine.tokenize(source, add_special=False)
    k = next(i for i, t in enumerate(pred) if old.encode() in engine.piece(t))
    renamed = engine.tokenize(engine.piece(pred[k]).decode().replace(old, new), add_special=False)
    return pred, pred[:k] + renamed + pred[k + 1 : k + 2], engine.detokenize(pred[k + 2 :])


def test_a_rename_of_a_word_split_over_tokens_is_made_wherever_the_word_occurs(engine):
    """glob's `root_dir`: the output wrote " base" for " root" before "_dir"; the rename is of the
    whole word, made where the word comes as other tokens ("=root" "_dir"), not in `root_directory`."""
    source = "def glob(pathname, *, root_dir=None):\n    return iglob(pathname, root_dir=root_dir)\n# root_directory\n"
    pred, output, rest = _renamed_once(engine, source, "root", "base")
    assert not any(b"root_dir" in engine.piece(t) for t in pred), "the test's premise: the word is split"
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin([1])
    drafter.extend(output)
    assert engine.detokenize(drafter.propose(64).tokens.tolist()) == re.sub(r"\broot_dir\b", "base_dir", rest)


def test_a_replacement_is_not_made_inside_a_longer_word(engine):
    """" month" -> " mon" learned before ", day" is made at the next " month" but not in "monthrange"."""
    source = "def f(year, month, day):\n    return monthrange(year, month)\n"
    pred, output, rest = _renamed_once(engine, source, "month", "mon")
    word = next(t for t in pred if engine.piece(t) == b" month")
    assert pred.count(word) == 3, "the test's premise: monthrange starts with the same token"
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin([1])
    drafter.extend(output)
    assert engine.detokenize(drafter.propose(64).tokens.tolist()) == rest.replace("year, month)", "year, mon)")


def _edited_up_to(engine, source: str, old: str, new: str) -> tuple[list[int], list[int], str]:
    """(prediction tokens, an output that wrote the prediction with its first `old` written `new`
    up to a token boundary just after it and then one more prediction token, the prediction's text
    after that): the reply's own tokenizing of the edit, however it splits."""
    pred = engine.tokenize(source, add_special=False)
    end, at, k = source.index(old) + len(old), 0, 0
    while at < end:
        at += len(engine.piece(pred[k]))
        k += 1
    edited = engine.tokenize(source[:at].replace(old, new, 1), add_special=False)
    return pred, edited + pred[k : k + 1], engine.detokenize(pred[k + 1 :])


def test_a_rename_inside_a_word_renames_its_numbered_family(engine):
    """calendar's `leapdays(y1, y2)` under "rename year to yr": the reply wrote `yr1` for `y1` (an
    insertion inside the word: nothing of the prediction skipped) and then `yr2` for `y2`: a learned
    `y1` -> `yr1` is drafted as `yr1` again and makes `y2` `yr2`, but leaves `y` and `by1` alone."""
    source = "def leapdays(y1, y2):\n    y1 -= 1\n    y2 -= 1\n    return y2 - y1 + by1(y)\n"
    pred, output, rest = _edited_up_to(engine, source, "y1", "yr1")
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin([1])
    drafter.extend(output)
    expected = re.sub(r"\by([12])\b", r"yr\1", rest)
    assert expected != rest and "by1(y)" in expected
    assert engine.detokenize(drafter.propose(64).tokens.tolist()) == expected


def test_a_renamed_word_is_renamed_as_a_part_of_snake_case_names(engine):
    """fnmatch's `pat` renamed `pattern`: the reply wrote `pattern_str` for `pat_str` too."""
    source = "def translate(pat):\n    pat_str = str(pat)\n    return _pat_cache(pat_str), path\n"
    pred, output, rest = _edited_up_to(engine, source, "(pat", "(pattern")
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin([1])
    drafter.extend(output)
    expected = re.sub(r"(?<![A-Za-z0-9])pat(?![A-Za-z0-9])", "pattern", rest)
    assert "pattern_str" in expected and "_pattern_cache" in expected and "path" in expected
    assert engine.detokenize(drafter.propose(64).tokens.tolist()) == expected


def _follow(drafter, output: list[int], curve=PRIOR) -> list[tuple[int, list[int], int]]:
    """Drive `drafter` as the loop would over a reply that is `output` (drafts sized on `curve`,
    verified greedily against the output): (where, the draft verified, how many were accepted)."""
    drafts, at = [], 0
    while at < len(output):
        proposal, n = drafter.propose(64), 0
        if proposal is not None:
            k = (curve.best_length(proposal.acceptance, len(proposal.tokens)) if proposal.path_probs is None
                 else curve.best_chain_size(proposal.path_probs, proposal.acceptance))
            draft = proposal.first(max(k, 1))  # a draft not worth a decode is scored as the loop's shadow
            while n < len(draft.tokens) and at + n < len(output) and draft.tokens[n] == output[at + n]:
                n += 1
            verified = k > 0 and at + n < len(output)  # a shadow's next token is not known yet
            drafter.update(Feedback(draft, n, next_token=output[at + n] if verified else -1))
            drafts.append((at, draft.tokens.tolist(), n) if k else (at, [], 0))
            n = n if k else 0
        drafter.extend(output[at : at + n + 1])
        at += n + 1
    return drafts


def test_renames_a_reply_keeps_out_of_its_docstrings_are_drafted_kept_there(engine):
    """bisect's edit (the 1.5B): `lo` renamed `low` in the code, kept in every docstring. Once the
    reply has kept the word in prose, drafts keep it there and still rename it in code: the second
    function is drafted with no draft rejected."""
    body = 'def {f}(a, lo, hi):\n    """Search a[lo:hi] from lo."""\n    return g(a, lo, hi)\n\n\n'
    source = body.format(f="left") + body.format(f="right")
    reply = source.replace(", lo", ", low")
    assert reply.count(", low,") == 4 and reply.count("[lo:") == 2 and "loww" not in reply, "the test's premise"
    pred, output = engine.tokenize(source, add_special=False), engine.tokenize(reply, add_special=False)
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin(pred)  # the prompt holds the file, as a request to edit it does
    drafts = _follow(drafter, output)
    second = len(engine.tokenize(reply[: reply.index("def right")], add_special=False))
    assert any(n < len(tokens) for at, tokens, n in drafts if at < second)  # the first function taught it
    late = [(at, tokens, n) for at, tokens, n in drafts if at + len(tokens) > second]
    assert late and all(n == len(tokens) or at + n == len(output) for at, tokens, n in late)
    assert drafter.habits.chance(b"lo", "prose") == (0.0, True)
    assert drafter.habits.chance(b"lo", "code") == (1.0, True)


def test_a_draft_stops_before_the_first_word_the_request_names(engine):
    """Where the request names a word of the file's code, its first occurrence is where the edit
    is likely: the first draft stops just before it (the decode's own next token is the reply's
    choice there), and once the reply has passed the word drafts run through it."""
    code = "def fnmatch(name, pat):\n    name = normcase(name)\n    pat = normcase(pat)\n    return match(name, pat)\n"
    request = f"Rename the parameter pat to pattern everywhere, in one code block.\n```python\n{code}```"
    pred = engine.tokenize(code, add_special=False)
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin(engine.tokenize(request, add_special=False))
    assert drafter.mentions.named == {b"pat"}  # not `in` (a keyword), nor the code's other words
    first = next(i for i, t in enumerate(pred) if engine.piece(t).strip() == b"pat")
    draft = drafter.propose(31)
    assert PRIOR.best_chain_size(draft.path_probs, draft.acceptance) == first
    drafter.update(Feedback(draft.first(first), first, next_token=pred[first]))
    drafter.extend(pred[: first + 1])  # the reply kept `pat` there: the decode's own next token
    assert drafter.named_estimate.get(NAMED) < NAMED_PRIOR  # learned, though no draft held the word
    after = drafter.propose(31)
    assert after.path_probs is None and PRIOR.best_length(after.acceptance, len(after.tokens)) > first


def test_a_draft_is_sized_to_stop_before_a_doubtful_rename():
    """A chain's tokens can differ in how sure they are: a rename the reply made half the time,
    deep in a long sure copy, caps the decode near it on a CPU curve; a sure one does not."""
    cpu = CostCurve((1, 2, 4, 8, 16, 32, 64), (1.0, 1.8, 2.5, 4.1, 6.0, 9.8, 13.5))
    sure = np.full(63, 0.995)
    doubtful = sure.copy()
    doubtful[20] = 0.3
    assert cpu.best_chain_size(np.cumprod(sure), 0.995) == 63
    assert cpu.best_chain_size(np.cumprod(doubtful), 0.995) == 20  # stopped just before it
    loose = np.full(63, 0.8)  # a reply that keeps to its prediction less: the usual draft is short anyway
    loose[30] = 0.5
    assert cpu.best_chain_size(np.cumprod(loose), 0.8) == cpu.best_length(0.8, 30) < 30
    draft = Draft(np.arange(63, dtype=np.int32), "prediction", 0.995, path_probs=np.cumprod(doubtful))
    assert np.array_equal(draft.first(10).path_probs, np.cumprod(doubtful)[:10])


def test_prose_is_comments_and_strings():
    def spans(text: bytes) -> list[bytes]:
        marked = "".join("^" if p else " " for p in prose_bytes(text))
        return [text[m.start() : m.end()] for m in re.finditer(r"\^+", marked)]

    python = b'x = f(a)  # a is kept\ns = "a b" + \'c\\\' d\'\ndef g():\n    """Docs of a."""\n    return a // b\n'
    assert spans(python) == [b"# a is kept", b'"a b"', b"'c\\' d'", b'"""Docs of a."""']  # `//` divides
    c = b'int x = a; // a is kept\n/* and a */ s = "a \\" b";\n'
    assert spans(c) == [b"// a is kept", b"/* and a */", b'"a \\" b"']


def test_the_drafter_finds_its_place_after_an_insertion():
    pred = list(range(100, 140))
    drafter = PredictionDrafter(pred)
    drafter.begin([1])
    drafter.extend(pred[:10] + [7, 8, 9, 6, 5])  # ten followed, then five new tokens
    assert drafter.propose(4) is None  # lost
    drafter.extend(pred[10:14])  # the old text resumes
    assert drafter.propose(4).tokens.tolist() == pred[14:18]


def test_a_reply_is_not_placed_in_its_prediction_by_blank_lines_and_punctuation(engine):
    """A reply that talks about a pasted block writes ")\\n\\n" before code of its own; the block's
    ")\\n\\n" a few lines on is not where the reply is (the 135M's ":\\n\\n" drafted from there kept
    nothing), while a short match with a word in it is (an insertion ends where the old text resumes)."""
    pred = engine.tokenize(PREDICTION, add_special=False)
    talk = engine.tokenize("It adds the values up (then divides)\n\n", add_special=False)
    assert any(pred[i : i + 2] == talk[-2:] for i in range(len(pred) - 1))  # the block has them too
    drafter = PredictionDrafter(pred, vocab=engine)
    drafter.begin(engine.tokenize("Explain this code:\n" + PREDICTION, add_special=False))
    drafter.extend(talk)
    assert drafter.propose(8) is None  # lost: not placed after the block's ")\n\n"
    words = engine.tokenize(" total = 0", add_special=False)
    at = next(i for i in range(len(pred)) if pred[i : i + len(words)] == words)
    drafter.extend(engine.tokenize("\n    x = 1\n   ", add_special=False) + pred[at : at + 3])
    assert drafter.propose(4).tokens.tolist() == pred[at + 3 : at + 7]


def test_a_reply_that_kept_to_its_prediction_drafts_long_again_after_an_edit():
    """After every edit the run starts again at 0; how far the reply has kept to its prediction
    (here: 3 drafts of 16, all accepted) decides the next draft's estimate, not the short-run prior
    alone. Each reply starts from the priors again."""
    pred = list(range(100, 200))
    drafter = PredictionDrafter(pred)
    drafter.begin([1])
    first = drafter.propose(16)
    drafter.extend(pred[:16])  # written with no draft verified (e.g. a grammar's first tokens)
    for at in (16, 32, 48):  # then three long drafts, every token accepted: long-run buckets
        draft = drafter.propose(16)
        drafter.update(Feedback(draft, 16))
        drafter.extend(pred[at : at + 16])
    drafter.extend([7])  # an edit: one new token
    drafter.extend(pred[65:66])  # and back at once (a replacement of pred[64])
    after_edit = drafter.propose(16)
    assert after_edit.key[0] == first.key[0]  # the same run bucket as the reply's first draft ...
    assert 1 - after_edit.acceptance < (1 - first.acceptance) / 2  # ... but what the reply showed counts
    drafter.begin([1])
    assert drafter.propose(16).acceptance == pytest.approx(first.acceptance)


def test_a_prediction_is_drafted_long_from_the_reply_s_first_token():
    """A prediction is what the reply will mostly repeat: its first draft is sized as a copy under
    way on the prior cost curve, not as a chance match (0.6 drafted 2 tokens, so a reply that
    repeats its file spent its first decodes at 2-4 rows)."""
    pred = list(range(100, 200))
    drafter = PredictionDrafter(pred)
    drafter.begin([1])
    draft = drafter.propose(31)
    assert list(draft.tokens[:3]) == pred[:3]
    assert PRIOR.best_length(draft.acceptance, len(draft.tokens)) >= 15


def test_a_prediction_the_prompt_does_not_hold_is_drafted_cautiously(engine):
    """The file a request pastes and asks to edit is believed from the reply's first token; a
    prediction the prompt does not hold may be anything: its first draft is shorter."""
    pred = engine.tokenize(PREDICTION, add_special=False)
    first = {}
    for name, request in (("held", EDIT), ("other", "Explain what a hash table is, in two sentences.")):
        drafter = PredictionDrafter(pred, vocab=engine)
        drafter.begin(engine.tokenize(request, add_special=False))
        draft = drafter.propose(31)
        first[name] = PRIOR.best_length(draft.acceptance, len(draft.tokens))
    assert first["held"] > first["other"] > 0


@pytest.mark.parametrize("method", ["pld", "sense"])
def test_a_pasted_code_block_is_an_implicit_prediction(engine, method):
    """An edit request with the code pasted is Predicted Outputs without the field: each drafting
    method drafts the block through the prediction drafter (its renames and doubts), changes
    nothing, and reports no prediction counts; a short snippet or no block leaves the method alone."""
    assert last_code_block(engine, engine.tokenize(EDIT, add_special=False)).endswith("```")
    assert last_code_block(engine, engine.tokenize("Why does `x = 1` fail?\n```python\nx = 1\n```", add_special=False)) is None
    prompt = prompt_tokens(engine, EDIT)
    plain, plain_stats = decode(engine, GenerationOptions(method="ar", max_tokens=120), prompt)
    pasted, stats = decode(engine, GenerationOptions(method=method, max_tokens=120), prompt)
    tie = np.flatnonzero(np.asarray(plain_stats.top2_gaps) < 0.25)
    n = int(tie[0]) + 1 if len(tie) else len(plain)
    assert pasted[:n] == plain[:n]
    assert stats.drafted_by_source.get("prediction", 0) > 0 and stats.accepted > 0
    assert stats.prediction_accepted == stats.prediction_rejected == 0
    _, other = decode(engine, GenerationOptions(method=method, max_tokens=40), prompt_tokens(engine, "Name three colours."))
    assert "prediction" not in other.drafted_by_source


def test_generate_predict_reads_a_file_and_reports_the_counts(tmp_path):
    path = tmp_path / "stats.py"
    path.write_text(PREDICTION)
    out = run_cli("generate", EDIT, "--predict", str(path), "--method", "ar", "--max-tokens", "60", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["prediction"]["accepted"] > 0 and doc["tau"] > 1.2
    bad = run_cli("generate", EDIT, "--predict", str(tmp_path / "missing.py"))
    assert bad.returncode != 0 and "--predict" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_server_takes_openai_prediction(engine, tmp_path):
    from test_server import Server

    server = Server()
    try:
        client = server.client()
        messages = [{"role": "user", "content": EDIT}]
        reply = client.chat.completions.create(model="test", messages=messages, max_tokens=60, temperature=0,
                                               prediction={"type": "content", "content": PREDICTION},
                                               extra_body={"method": "ar"})
        details = reply.usage.completion_tokens_details
        n_pred = len(engine.tokenize(PREDICTION, add_special=False))
        assert details.accepted_prediction_tokens > 0
        assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == n_pred
        assert reply.model_extra["sense"]["tau"] > 1.2
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="test", messages=messages, max_tokens=8,
                                           prediction={"type": "text", "content": PREDICTION})
        assert "prediction" in str(err.value)
    finally:
        server.stop()


def test_a_pasted_blocks_runs_estimate_their_first_token_apart():
    """A reply that talks about a pasted block meets its 4-grams by chance: the next token is often
    the block's, the run after it rarely (the 135M's chat-1: five drafts of 7-15 tokens kept 1).
    The implicit prediction estimates a run's first token apart from the run, as prompt lookup
    does its matches': first tokens that hit do not raise the run's estimate, and a draft that
    failed at its second token lowers the run alone. A client's prediction is believed whole."""
    pred = list(range(100, 160))
    implicit, client = PredictionDrafter(pred, believed=False), PredictionDrafter(pred)
    for d in (implicit, client):
        d.begin(pred)  # the prompt holds the block
        for _ in range(4):  # proposals not verified, scored on their first tokens: all right
            d.update(Feedback(d.propose(15).first(1), 1))
        draft = d.propose(15)
        d.update(Feedback(draft.first(8), 1))  # verified: the first token kept, the second not
    after = implicit.propose(15)
    assert after.geometric and after.path_probs[0] > after.acceptance  # the head surer than the run
    assert implicit.estimate.get(0) < implicit.estimate.first(0)
    assert client.propose(15).path_probs is None  # one estimate for the whole run
