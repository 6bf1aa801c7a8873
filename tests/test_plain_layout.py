"""Prompts read on the weights' plain layout (plain_layout.py): the conversation moves between the two
contexts whole, key states and cancels included, and the verdict decides where it is opened.

The 135M (Q8_0) has nothing llama.cpp repacks, so both of its layouts run the same kernels and every
number must come out bit-identical: that is what tells a KV entry lost or misplaced in a copy. The
1.5B (Q4_K, repacked here) checks that a reply read after a plain-layout prefill is the same model's.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

import sense_local as sl
from sense_local import plain_layout
from sense_local.chat_template import chat_tokens
from sense_local.errors import Cancelled

from conftest import ROOT, chat

TEXT = (ROOT / "README.md").read_text()


def _engine(path, monkeypatch, plain: str, **kw) -> sl.Engine:
    monkeypatch.setenv("SENSE_PLAIN_LAYOUT", plain)
    return sl.Engine(path, n_ctx=2048, **kw)


def _greedy(engine, first: np.ndarray, n: int) -> tuple[list[int], list[float]]:
    """n greedy tokens after logits `first`, and the top-2 gap before each."""
    logits, out, gaps = first, [], []
    for _ in range(n):
        top2 = np.sort(logits)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        out.append(int(logits.argmax()))
        logits = engine.eval([out[-1]], outputs="last", with_keys=True).logits[-1].copy()
    return out, gaps


def _conversation(engine, turns: list[str]):
    """Each turn's prompt prefilled after the reply to the last (prefix reused): the last logits, the
    key states of every committed position and 12 greedy tokens, per turn."""
    seen, history = [], []
    for text in turns:
        history.append({"role": "user", "content": text})
        out = engine.prefill(chat_tokens(engine, history), with_keys=True)
        first = out.logits[-1].copy()
        reply, _ = _greedy(engine, first, 12)
        history.append({"role": "assistant", "content": engine.detokenize(reply)})
        seen.append((first, engine.committed_keys(engine.n_past).copy(), reply, out.reused))
    return seen


def test_a_conversation_read_on_the_plain_layout_is_the_one_read_on_the_engine(model_path, monkeypatch):
    turns = ["Summarize:\n" + TEXT[2000:5000], "And this part:\n" + TEXT[9000:10500]]
    plain = _engine(model_path, monkeypatch, "1")
    try:
        got = _conversation(plain, turns)
        assert plain._plain is not None and plain._plain.tokens == plain.tokens[: len(plain._plain.tokens)]
        assert len(plain._plain.tokens) > 600  # the second turn's prompt was read there too
    finally:
        plain.close()
    own = _engine(model_path, monkeypatch, "0")
    try:
        want = _conversation(own, turns)
        assert own._plain is None
    finally:
        own.close()
    for (g_first, g_keys, g_reply, g_reused), (w_first, w_keys, w_reply, w_reused) in zip(got, want):
        assert g_reused == w_reused
        np.testing.assert_array_equal(g_first, w_first)
        np.testing.assert_array_equal(g_keys, w_keys)
        assert g_reply == w_reply
    assert got[1][3] > 600  # the second turn reused the first one's prompt and reply


def test_a_cancelled_plain_prefill_keeps_its_finished_chunks_and_the_next_reads_the_same(model_path, monkeypatch):
    engine = _engine(model_path, monkeypatch, "1")
    try:
        prompt = chat(engine, "Read this:\n" + TEXT[:6000])
        cancel = threading.Event()
        seen = []

        def progress(done, total):
            seen.append(done)
            if done >= 256:
                cancel.set()

        with pytest.raises(Cancelled):
            engine.prefill(prompt, cancel=cancel, progress=progress)
        kept = engine.n_past
        assert 256 <= kept < len(prompt) and engine.tokens == prompt[:kept]
        resumed = engine.prefill(prompt).logits[-1].copy()
        assert engine.tokens == prompt
        engine.reset()
        fresh = engine.prefill(prompt).logits[-1].copy()
    finally:
        engine.close()
    np.testing.assert_array_equal(resumed, fresh)


def test_the_verdict_decides_where_the_plain_layout_opens(model_path, monkeypatch, tmp_path):
    from sense_local.speculative import cost

    monkeypatch.setattr(cost, "_cache_file", lambda engine: tmp_path / "curve.json")
    engine = _engine(model_path, monkeypatch, "")
    try:
        assert plain_layout.verdict(engine) is None and engine.plain_layout() is None  # never measured: not opened
        found = plain_layout.measure(engine)
        kept = json.loads((tmp_path / "curve-layout.json").read_text())
        assert kept == found and found["plain_tok_s"] > 0 and found["repacked_tok_s"] > 0
        assert engine.n_past == 0
        for ratio, opened in ((plain_layout.GAIN + 0.4, True), (plain_layout.GAIN - 0.1, False)):
            (tmp_path / "curve-layout.json").write_text(json.dumps({**found, "plain_over_repacked": ratio}))
            engine.forget_plain_layout()
            assert (engine.plain_layout() is not None) == opened
        engine.forget_plain_layout()
        monkeypatch.setenv("SENSE_PLAIN_LAYOUT", "0")
        (tmp_path / "curve-layout.json").write_text(json.dumps({**found, "plain_over_repacked": 9.0}))
        assert engine.plain_layout() is None
    finally:
        engine.close()


def test_a_one_shot_command_opens_the_plain_layout_only_when_a_prompt_wants_it(model_path, monkeypatch, tmp_path):
    from sense_local.conversation import Conversation, ConversationConfig
    from sense_local.generation import GenerationOptions

    monkeypatch.setenv("SENSE_HOME", str(tmp_path))
    monkeypatch.setenv("SENSE_PLAIN_LAYOUT", "1")
    config = ConversationConfig(model=str(model_path), n_ctx=2048, history=False, cache_disk_mib=0,
                                options=GenerationOptions(method="ar", max_tokens=4))
    staying = Conversation.open(config)  # the chat app, a server: opened at start, before any prompt
    try:
        assert staying.engine._plain is not None
    finally:
        staying.close()
    once = Conversation.open(config.replace(one_shot=True))  # `generate`, `ask`
    try:
        assert once.engine._plain is None
        list(once.reply([{"role": "user", "content": "Hi"}]))
        assert once.engine._plain is None  # a short prompt never pays for it
        list(once.reply([{"role": "user", "content": "Summarize:\n" + TEXT[2000:4000]}]))
        assert once.engine._plain is not None and len(once.engine._plain.tokens) > 200  # the long one was read there
    finally:
        once.close()


def test_key_states_of_long_runs_come_from_the_plain_layout_alike(model_path, monkeypatch):
    tokens = None
    keys = {}
    for flag in ("1", "0"):
        engine = _engine(model_path, monkeypatch, flag)
        try:
            tokens = tokens or engine.tokenize(TEXT[:3000], add_special=False)
            keys[flag] = engine.side_keys(tokens[:300])  # the hidden pass, on the plain weights where opened
            assert (engine._plain is not None) == (flag == "1")
        finally:
            engine.close()
    np.testing.assert_array_equal(keys["1"], keys["0"])


def test_the_1_5b_reads_a_prompt_on_its_plain_layout_as_the_same_model(monkeypatch):
    """Repacked and plain Q4_K kernels round differently: the greedy replies agree until a near-tie."""
    path = sl.resolve_model("default")
    replies = {}
    for flag in ("1", "0"):
        engine = _engine(path, monkeypatch, flag)
        try:
            prompt = chat(engine, "Summarize in two sentences:\n" + TEXT[3000:4200])
            first = engine.prefill(prompt).logits[-1].copy()
            assert (engine._plain is not None) == (flag == "1")
            replies[flag] = _greedy(engine, first, 24)
        finally:
            engine.close()
    (plain, _), (own, gaps) = replies["1"], replies["0"]
    parted = next((i for i, (a, b) in enumerate(zip(plain, own)) if a != b), None)
    assert parted is None or gaps[parted] < 0.25, (parted, gaps[parted] if parted is not None else None)


def test_a_long_draft_verified_on_the_plain_layout_matches_and_pld_stays_lossless(model_path, monkeypatch):
    """Decodes wanting every row's logits run there from ALL_MIN tokens (a draft verified): the same
    rows as on the engine's context; `ar` writes the reply it writes without the plain layout, and
    `pld` with long drafts (a flat curve) writes `ar`'s for the length of a long verified copy. (Not
    to the end: on the 135M, after this re-evaluated prompt tail, `pld`'s batched rows on the engine's
    own context part from `ar`'s one-token decodes at token 55, top-2 gap 0.59, as they did before the
    plain layout existed (8b0f850): batched arithmetic, not the copies.)"""
    from sense_local.bench.runner import first_divergence
    from sense_local.bench.tasks import build_tasks
    from sense_local.generation import GenerationOptions, make_decoder

    task = next(t for t in build_tasks("quick") if t.kind == "code")
    monkeypatch.setenv("SENSE_COST_FLAT", "1")  # drafts as long as the copy: verifications of 32+ rows
    seen = {}
    for flag in ("1", "0"):
        engine = _engine(model_path, monkeypatch, flag)
        try:
            prompt = chat(engine, task.prompt)
            engine.prefill(prompt)
            rows = engine.eval(prompt[-48:], len(prompt) - 48, outputs="all", with_keys=True)
            seen[flag] = (rows.logits.copy(), rows.keys.copy())
            assert engine.tokens == prompt and (engine._plain is not None) == (flag == "1")
            ar = make_decoder(engine, GenerationOptions(method="ar", max_tokens=96), record_gaps=True)
            seen[flag] += ([e.token for e in ar.generate(prompt, 96) if e.token >= 0],)
            pld = make_decoder(engine, GenerationOptions(method="pld", max_tokens=96))
            reply = [e.token for e in pld.generate(prompt, 96) if e.token >= 0]
            assert pld.stats.accepted >= 32  # long copies were verified
            at = first_divergence(reply, seen[flag][2])
            assert at is None or at >= 40, (flag, at)
        finally:
            engine.close()
    np.testing.assert_array_equal(seen["1"][0], seen["0"][0])
    np.testing.assert_array_equal(seen["1"][1], seen["0"][1])
    assert seen["1"][2] == seen["0"][2]
