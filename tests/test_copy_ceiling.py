"""The copy ceiling: an oracle's tau, and a bound no copying drafter under exact acceptance passes."""
from __future__ import annotations

import pytest

from conftest import chat
from sense_local.bench.copy_ceiling import copy_ceiling, costed_ceiling
from sense_local.bench.suffix_model import calibrate, modeled_speed
from sense_local.bench.tasks import build_tasks
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.rewrap import rewrapped_tokens


def test_a_verbatim_copy_needs_the_prefill_and_one_forward():
    # the prefill chooses 2; one draft after the anchor 2 then covers 3..8
    assert copy_ceiling([1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6, 7, 8]) == pytest.approx(7 / 2)


def test_nothing_to_copy_is_one_token_per_forward():
    assert copy_ceiling([1, 2, 3], [11, 12, 13, 14]) == 1.0


def test_the_output_so_far_and_extra_sources_are_copied_from():
    out = [7, 8, 9, 5, 7, 8, 9, 5]
    assert copy_ceiling([1], out) == pytest.approx(8 / 6)  # 7, 8, 9, 5 and 7 one by one, then 8 9 5
    # a document holding 7 8 9 5: after the prefill's 7 one forward drafts 8 9 5 7 8 9 5
    assert copy_ceiling([1], out, [[3, 7, 8, 9, 5, 7, 8, 9, 5]]) == pytest.approx(8 / 2)


def test_a_longer_anchor_never_raises_the_ceiling():
    prompt, out = [1, 2, 3, 9, 2, 4, 5], [2, 4, 5, 6, 1, 2, 3]
    assert copy_ceiling(prompt, out, anchor=2) <= copy_ceiling(prompt, out, anchor=1)


def test_the_drafters_stay_under_the_ceiling_on_real_prompts(engine):
    """pld and sense draft what follows an occurrence of the newest token, so on the same output
    their tau cannot pass the oracle's."""
    for task in [t for t in build_tasks("quick") if t.kind == "grounded"][:3]:
        prompt = chat(engine, task.prompt)
        engine.prefill(prompt, outputs="keys", with_keys=True)
        outputs = {}
        for method in ("ar", "pld", "sense"):
            decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=64))
            outputs[method] = ([e.token for e in decoder.generate(prompt, 64) if e.token >= 0], decoder.stats)
        ar_tokens = outputs["ar"][0]
        ceiling = copy_ceiling(prompt, ar_tokens, [rewrapped_tokens(engine, prompt) or []])
        assert ceiling > 1.0, task.name  # these prompts are copied from
        for method in ("pld", "sense"):
            tokens, stats = outputs[method]
            if tokens == ar_tokens:
                assert stats.tau <= ceiling + 1e-9, (task.name, method, stats.tau, ceiling)


def test_the_costed_ceiling_pays_the_curve_a_copy_is_verified_at():
    prompt, out = [1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 4, 5, 6, 7, 8]  # after the first token, a copy of 6
    assert costed_ceiling(prompt, out, lambda k: 1.0) == pytest.approx(6.0)  # one decode verifies it all
    assert costed_ceiling(prompt, out, lambda k: float(k)) == pytest.approx(1.0)  # linear cost: drafts gain nothing
    half = costed_ceiling(prompt, out, lambda k: 1.0 + 0.5 * (k - 1))
    assert half == pytest.approx(6 / 3.5)  # one decode of 6 (5 drafted, the 6th its own token): c(6) = 3.5
    assert costed_ceiling([1, 2, 3], [11, 12, 13, 14], lambda k: 1.0) == pytest.approx(1.0)  # nothing to copy



def test_the_modeled_suffix_drafter_copies_an_earlier_reply_but_never_passes_the_oracle():
    rng = __import__("random").Random(7)
    phrase = rng.sample(range(1000, 2000), 40)  # what the user's replies keep saying
    replies = [(words := rng.sample(range(100, 900), 24))[:12] + phrase + words[12:] for _ in range(4)]
    prompt = [1, 2, 3]
    table = calibrate((prompt, reply, replies[:i]) for i, reply in enumerate(replies[:3]))
    curve = lambda k: 1.0 + 0.3 * (k - 1)  # noqa: E731
    output = replies[3]
    with_history = modeled_speed(prompt, output, replies[:3], table, curve)
    alone = modeled_speed(prompt, output, [], table, curve)
    assert with_history[0] > 1.2 and with_history[1] > 2  # the phrase is drafted from the history
    assert alone == (1.0, 1.0)  # nothing in this reply repeats: nothing drafted, nothing paid
    assert with_history[0] <= costed_ceiling(prompt, output, curve, replies[:3]) + 1e-9
    # a curve on which a 2-token decode costs two decodes: no draft can pay, none is made
    assert modeled_speed(prompt, output, replies[:3], table, lambda k: float(k))[0] == 1.0
