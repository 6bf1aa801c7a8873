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
from sense_local.speculative.cost import PRIOR
from sense_local.speculative.drafters.prediction import PredictionDrafter
from sense_local.speculative.types import Feedback, GenerationStats

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


def test_the_drafter_finds_its_place_after_an_insertion():
    pred = list(range(100, 140))
    drafter = PredictionDrafter(pred)
    drafter.begin([1])
    drafter.extend(pred[:10] + [7, 8, 9, 6, 5])  # ten followed, then five new tokens
    assert drafter.propose(4) is None  # lost
    drafter.extend(pred[10:14])  # the old text resumes
    assert drafter.propose(4).tokens.tolist() == pred[14:18]


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
    assert after_edit.key == first.key  # the same run bucket as the reply's first draft ...
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
