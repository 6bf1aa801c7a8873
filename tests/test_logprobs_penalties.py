"""Log-probabilities and presence / frequency penalties (issue 32): read off the right rows and kept
exact under speculative verification, on the real model; then through the server with `openai`."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from conftest import chat
from sense_local.bench.runner import NEAR_TIE, first_divergence
from sense_local.bench.tasks import build_tasks
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.speculative.penalties import Penalties
from test_server import Server, http

# The model repeats lines of its prompt: prompt lookup drafts long runs, so most tokens are speculated.
COPY = next(t for t in build_tasks("quick") if t.kind == "grounded").prompt
# batched and one-token evaluation differ a little (near-ties, test_lossless): 0.07 seen at a prompt's
# last row evaluated whole vs after a cached prefix; a wrong row is off by whole nats
LP_TOL = 0.15
FAR_TOL = 0.5  # for alternatives under -2.5, still well short of a wrong row's whole nats


def _run(engine, prompt, method, n=64, **options):
    decoder = make_decoder(engine, GenerationOptions(method=method, max_tokens=n, **options))
    events = [e for e in decoder.generate(prompt, n) if e.token >= 0]
    return events, decoder.stats


def _row(engine, prompt, out, at) -> np.ndarray:
    """The model's logits for the token after prompt + out[:at], from a plain prefill."""
    return np.array(engine.prefill(list(prompt) + list(out[:at]), outputs="last").logits[-1])


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    return row - (row.max() + math.log(np.exp(row - row.max()).sum()))


def test_speculated_tokens_get_the_log_probabilities_of_their_own_rows(engine):
    prompt = chat(engine, COPY)
    events, stats = _run(engine, prompt, "pld", logprobs=3)
    assert stats.accepted > 10  # most of the reply was drafted and verified in batches
    tokens = [e.token for e in events]
    speculated = [i for i, e in enumerate(events) if e.source != "target"]
    for at in [0, 1, *speculated[:4], *speculated[-2:]]:
        expected = _log_softmax(_row(engine, prompt, tokens, at))
        got = events[at].logprob
        assert got.logprob == pytest.approx(expected[tokens[at]], abs=LP_TOL), at
        # each alternative with real mass its own (far-down logits drift more between batch shapes: an
        # alternative at -3.7 read 0.28 off, the prompt's last row cached by an earlier test's decodes)
        assert all(v == pytest.approx(expected[t], abs=LP_TOL if v > -2.5 else FAR_TOL) for t, v in got.top if v > -5), at
        assert got.top[0][1] == pytest.approx(expected.max(), abs=LP_TOL)  # the likeliest first
        assert got.top[0][1] >= got.top[1][1] >= got.top[2][1]
        assert sum(math.exp(v) for _, v in got.top) <= 1.0 + 1e-6
    # greedy: each token is its row's likeliest (up to batched arithmetic's near-ties)
    assert all(e.logprob.top[0][0] == e.token or e.logprob.top[0][1] - e.logprob.logprob < NEAR_TIE for e in events)


def test_ar_and_pld_report_the_same_log_probabilities(engine):
    prompt = chat(engine, COPY)
    ar, _ = _run(engine, prompt, "ar", logprobs=0)
    pld, _ = _run(engine, prompt, "pld", logprobs=0)
    n = first_divergence([e.token for e in ar], [e.token for e in pld])
    n = len(ar) if n is None else n
    assert n > 20
    diffs = [abs(a.logprob.logprob - b.logprob.logprob) for a, b in zip(ar[:n], pld[:n])]
    assert max(diffs) < LP_TOL and all(e.logprob.top == () for e in ar)


def _penalized_gap(engine, prompt, out, at, penalties: Penalties) -> float:
    """The top-2 gap of the row sequential decoding with these penalties judged at `at`."""
    state = penalties.start()
    for tok in out[:at]:
        state.accept(tok)
    row = state.apply(_row(engine, prompt, out, at)[None, :], np.empty(0, np.int32))[0]
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0])


@pytest.mark.parametrize("method", ["pld", "sense"])
def test_penalties_stay_exact_under_speculation(engine, method):
    penalties = dict(presence_penalty=0.4, frequency_penalty=0.3)
    prompt = chat(engine, COPY)
    ar, _ = _run(engine, prompt, "ar", **penalties)
    spec, stats = _run(engine, prompt, method, **penalties)
    ar_tokens, spec_tokens = [e.token for e in ar], [e.token for e in spec]
    at = first_divergence(spec_tokens, ar_tokens)
    if at is not None:
        assert _penalized_gap(engine, prompt, ar_tokens, at, Penalties(0.4, 0.3)) < NEAR_TIE, at
    assert stats.drafted > 0


def _most_repeated(words: list) -> int:
    return max(Counter(words).values())


def test_penalties_change_a_repetitive_reply(engine):
    prompt = chat(engine, COPY)  # the reply copies lines of the prompt: its tokens repeat
    plain, _ = _run(engine, prompt, "pld", n=96)
    penalized, _ = _run(engine, prompt, "pld", n=96, frequency_penalty=1.5, presence_penalty=0.5)
    assert _most_repeated([e.token for e in penalized]) < _most_repeated([e.token for e in plain])


def test_options_refuse_out_of_range_values():
    from sense_local.errors import SenseError

    for bad in (dict(presence_penalty=2.5), dict(frequency_penalty=-3), dict(logprobs=21), dict(logprobs=-1)):
        with pytest.raises(SenseError):
            GenerationOptions(**bad)


# ---------------------------------------------------------------------- through the server
@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def test_chat_logprobs_cover_every_token_streamed_or_not(server):
    client = server.client()
    kw = dict(model="x", messages=[{"role": "user", "content": COPY}], max_tokens=40, temperature=0,
              logprobs=True, top_logprobs=2, extra_body={"method": "pld"})
    whole = client.chat.completions.create(**kw)
    entries = whole.choices[0].logprobs.content
    assert len(entries) == whole.usage.completion_tokens
    assert "".join(e.token for e in entries) == whole.choices[0].message.content
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries)
    chunks = list(client.chat.completions.create(stream=True, **kw))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(streamed, entries)) < LP_TOL
    plain = client.chat.completions.create(**{**kw, "logprobs": None, "top_logprobs": None})
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_and_echo(server):
    client = server.client()
    prompt = "def add(a, b):\n    return"
    out = client.completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert all(len(t) <= 2 for t in lp.top_logprobs) and len(lp.token_logprobs) == out.usage.completion_tokens
    echoed = client.completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + out.choices[0].text


def test_penalties_through_the_server(server):
    client = server.client()
    kw = dict(model="x", messages=[{"role": "user", "content": COPY}], max_tokens=96, temperature=0)
    plain = client.chat.completions.create(**kw).choices[0].message.content
    penalized = client.chat.completions.create(frequency_penalty=1.5, presence_penalty=0.5, **kw)
    assert _most_repeated(penalized.choices[0].message.content.split()) < _most_repeated(plain.split())


@pytest.mark.parametrize("body, param", [
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": "high"}, "frequency_penalty"),
])
def test_bad_logprobs_and_penalties_are_400s_naming_the_field(server, body, param):
    r = http("POST", server.base + "/v1/chat/completions",
             json_body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **body})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = http("POST", server.base + "/v1/completions", json_body={"prompt": "hi", "max_tokens": 2, "logprobs": 6})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
