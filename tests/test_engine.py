"""The engine on the real model: logits and hidden states per position, batching, truncation."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from sense_local.errors import ContextOverflowError
from sense_local.speculative.verify import top2_gap

PASSAGE = (
    "The quick brown fox jumps over the lazy dog. Speculative decoding drafts several tokens and "
    "verifies them with one forward pass of the target model."
)


def test_batch_returns_logits_and_hidden_per_position(engine):
    tokens = engine.tokenize(PASSAGE)
    out = engine.eval(tokens, 0, outputs="all")
    assert out.logits.shape == (len(tokens), engine.n_vocab)
    assert out.keys.shape == (len(tokens), engine.n_embd) == (len(tokens), 576)
    assert np.isfinite(out.keys).all() and np.isfinite(out.logits).all()
    # hidden states differ from position to position
    sims = out.keys[1:] @ out.keys[:-1].T
    assert not np.allclose(out.keys[1], out.keys[2])
    assert np.linalg.matrix_rank(out.keys[:10]) == 10, sims.shape
    # the view is zero-copy over llama.cpp's buffer
    assert not out.logits.flags.owndata and not out.keys.flags.owndata
    assert engine.n_past == len(tokens)


def test_batched_eval_matches_sequential_evals(engine):
    tokens = engine.tokenize(PASSAGE)
    batched = engine.eval(tokens, 0, outputs="all")
    b_logits, b_hidden = batched.logits.copy(), batched.keys.copy()
    engine.reset()
    seq_logits, seq_hidden = [], []
    for i, t in enumerate(tokens):
        out = engine.eval([t], i, outputs="all")
        seq_logits.append(out.logits[0].copy())
        seq_hidden.append(out.keys[0].copy())
    seq_logits, seq_hidden = np.array(seq_logits), np.array(seq_hidden)
    assert np.abs(b_logits - seq_logits).max() < 0.5
    cos = (b_hidden * seq_hidden).sum(1) / np.linalg.norm(b_hidden, axis=1) / np.linalg.norm(seq_hidden, axis=1)
    assert cos.min() > 0.995
    differ = np.flatnonzero(b_logits.argmax(1) != seq_logits.argmax(1))
    for i in differ:  # argmax may only part at a near-tie
        assert top2_gap(seq_logits[i]) < 0.25


def test_truncate_then_reeval_reproduces_logits(engine):
    tokens = engine.tokenize(PASSAGE)
    first = engine.eval(tokens, 0, outputs="all").logits[-5:].copy()
    engine.truncate(len(tokens) - 5)
    assert engine.n_past == len(tokens) - 5
    again = engine.eval(tokens[-5:], outputs="all").logits.copy()
    assert np.abs(first - again).max() < 1e-3
    # a rejected draft: evaluate garbage, drop it, and the continuation is unchanged
    engine.truncate(len(tokens) - 1)
    engine.eval([11, 12, 13], outputs="all")
    engine.truncate(len(tokens) - 1)
    last = engine.eval(tokens[-1:], outputs="all").logits[0]
    assert np.abs(last - first[-1]).max() < 1e-3


def test_prefill_reuses_common_prefix(engine):
    prompt = chat(engine, "Name three rivers.")
    engine.reset()
    full = engine.prefill(prompt).logits[-1].copy()
    engine.eval([42, 43])  # something after the prompt
    again = engine.prefill(prompt).logits[-1].copy()  # reuses all but the last token
    assert engine.tokens == list(prompt)
    assert np.abs(full - again).max() < 0.5


def test_prefill_with_hidden_states_covers_a_prefix_cached_without_them(engine):
    prompt = chat(engine, "Name three rivers.")
    engine.reset()
    engine.prefill(prompt, with_keys=False)  # e.g. the previous turn was decoded by a method without SENSE
    assert engine.committed_keys(len(prompt)) is None
    engine.prefill(prompt, with_keys=True)
    states = engine.committed_keys(len(prompt))
    assert states is not None and np.isfinite(states).all() and np.abs(states).sum(1).min() > 0


def test_long_prompt_is_split_into_batches(engine):
    tokens = engine.tokenize(PASSAGE * 40)
    assert len(tokens) > engine.n_batch
    out = engine.eval(tokens, 0, outputs="all")
    assert out.logits.shape == (len(tokens), engine.n_vocab)
    assert engine.n_past == len(tokens)


def test_context_overflow_is_a_clear_error(engine):
    engine.reset()
    with pytest.raises(ContextOverflowError, match="context full"):
        engine.eval(np.full(engine.n_ctx + 1, 100, dtype=np.int32), 0)
    assert engine.n_past == 0


def test_tokenize_detokenize_round_trip_and_eog(engine):
    text = "Hello, wörld! 你好 🙂"
    tokens = engine.tokenize(text, add_special=False)
    assert engine.detokenize(tokens) == text
    assert engine.is_eog(engine.eos_id)
    assert not engine.is_eog(tokens[0])
    assert engine.piece(engine.eos_id) == b""  # control tokens render empty in output text


def test_side_evaluation_leaves_the_conversation_alone(engine):
    question = engine.tokenize("What does the with statement do?")
    isolated = engine.eval(question, 0, outputs="all", with_keys=True).keys.copy()
    engine.reset()
    tokens = engine.tokenize(PASSAGE)
    engine.eval(tokens[:-1], 0, outputs="all", with_keys=True)
    before = engine.eval(tokens[-1:], outputs="all").logits.copy()
    engine.truncate(len(tokens) - 1)
    side = engine.side_keys(question)
    assert engine.n_past == len(tokens) - 1 and engine.tokens == tokens[:-1]
    cos = np.sum(side * isolated, 1) / np.linalg.norm(side, axis=1) / np.linalg.norm(isolated, axis=1)
    assert cos.min() > 0.99  # the same states as evaluating the question alone
    after = engine.eval(tokens[-1:], outputs="all").logits
    assert np.abs(after - before).max() < 1e-3 * np.abs(before).max()  # the conversation's cache is intact


def test_hidden_outputs_skip_the_logit_rows_and_match_all_outputs(engine):
    tokens = engine.tokenize(PASSAGE * 20)
    assert len(tokens) > engine.n_batch  # several decodes
    full = engine.eval(tokens, 0, outputs="all", with_keys=True)
    full_hidden, last_logits = full.keys.copy(), full.logits[-1].copy()
    lean = engine.eval(tokens, 0, outputs="keys", with_keys=True)
    assert lean.logits.shape == (1, engine.n_vocab) and lean.keys.shape == (len(tokens), engine.n_embd)
    assert np.array_equal(lean.keys, full_hidden) and np.array_equal(lean.logits[0], last_logits)
    with pytest.raises(ValueError):
        engine.eval(tokens[:4], 0, outputs="keys", with_keys=False)


def test_hidden_pass_gives_the_embedding_path_states_and_leaves_the_conversation_alone(engine):
    tokens = engine.tokenize(PASSAGE * 20)[:700]
    expected = engine.eval(tokens, 0, outputs="keys", with_keys=True).keys.copy()
    engine.reset()
    engine.eval(tokens[:5], 0)
    fast = engine.hidden_pass(1024)
    assert fast is not None  # llama.cpp's graph callback works with this build and model
    got = fast.run(tokens)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert np.array_equal(fast.run(tokens[:300]), got[:300])  # each run starts from position 0
    assert engine.n_past == 5 and engine.hidden_pass(512) is fast  # kept, main context untouched
    with pytest.raises(ValueError, match="do not fit"):
        fast.run(np.zeros(fast.n_ctx + 1, np.int32))


def test_a_cancel_stops_the_decode_under_way(engine, monkeypatch):
    """The prefill's decode polls the cancel flag through llama.cpp's abort callback: a cancel that
    comes while one long decode runs ends it there (nothing of it is committed; without the hook the
    decode would finish and commit the whole prompt first), and the engine stays usable."""
    import threading

    from sense_local import prefill_reuse
    from sense_local.errors import Cancelled

    prompt = chat(engine, "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 90)
    monkeypatch.setattr(prefill_reuse, "prefill_chunk", lambda engine: 10**6)  # one eval for the whole prompt
    engine.reset()
    cancel = threading.Event()
    real_eval = engine.eval

    def eval_and_cancel_soon(*args, **kw):
        threading.Timer(0.05, cancel.set).start()  # Esc while this decode runs
        return real_eval(*args, **kw)

    engine.eval = eval_and_cancel_soon
    try:
        with pytest.raises(Cancelled):
            engine.prefill(prompt, cancel=cancel)
    finally:
        del engine.eval
    assert engine.n_past == 0 and engine.tokens == []
    after = engine.prefill(prompt).logits[-1].copy()  # the hook is gone: a normal prefill completes
    engine.reset()
    assert np.allclose(after, engine.prefill(prompt).logits[-1], atol=1e-3)


def test_the_cancel_event_is_read_once_a_millisecond_not_at_every_node(engine, monkeypatch):
    """ggml asks the abort callback after every graph node (~1,000 a decode on the 135M); the C
    poll (native_src/abort_poll.c) asks Python whether the event is set at the decode's first node
    and then at most once a millisecond: a short multi-token decode (a draft's verification, a
    prompt) reads it a few times where Python asked at every node reads it hundreds of times."""
    import threading
    import time

    hook = engine._cancel
    assert hook.native, "no C compiler found to build the abort poll"
    reads = []
    monkeypatch.setattr(hook, "requested", lambda: reads.append(1) or False)
    prompt = chat(engine, "Say hello to the quick brown fox.")

    def prefill_reads() -> tuple[int, float]:
        reads.clear()
        engine.reset()
        t0 = time.perf_counter()
        engine.prefill(prompt, cancel=threading.Event())
        return len(reads), 1000 * (time.perf_counter() - t0)

    native, ms = prefill_reads()
    monkeypatch.setattr(hook, "_callback", hook._check)  # Python asked at every node, as without a compiler
    monkeypatch.setattr(hook, "_data", None)
    every_node, _ = prefill_reads()
    assert 1 <= native <= ms + 2
    assert every_node > 100 and native < every_node / 5


def test_a_cancel_stops_a_drafts_verification(engine):
    """Esc while a draft is being verified: that decode polls the cancel flag too and stops, nothing
    of it committed, and the reply ends "cancelled" (without the hook the decode would finish, its
    accepted tokens would be committed, and only then would the loop see the flag)."""
    import threading

    from sense_local.generation import GenerationOptions, make_decoder

    prompt = chat(engine, "Repeat exactly: " + "the quick brown fox jumps over the lazy dog, " * 6)
    engine.reset()
    cancel = threading.Event()
    decoder = make_decoder(engine, GenerationOptions(method="pld", max_tokens=96))
    real_eval = engine.eval
    at = []

    def eval_cancelled_in_a_verification(tokens, *args, **kw):
        if len(tokens) > 1 and engine.n_past >= len(prompt) and not at:  # a draft, after the prefill
            at.append(engine.n_past)
            cancel.set()  # as if Esc came the moment this decode started
        return real_eval(tokens, *args, **kw)

    engine.eval = eval_cancelled_in_a_verification
    try:
        list(decoder.generate(prompt, 96, cancel=cancel))
    finally:
        del engine.eval
    assert at and decoder.stats.stop_reason == "cancelled"
    assert engine.n_past == at[0]  # the verification left nothing behind
    again = make_decoder(engine, GenerationOptions(method="pld", max_tokens=8))
    assert len(list(again.generate(prompt, 8))) == 8  # and the engine carries on


def _eval_sizes(engine, monkeypatch, after=None):
    """Record the size of each engine.eval call (calling after(sizes) when given)."""
    real_eval, sizes = engine.eval, []

    def recorded(tokens, *args, **kw):
        sizes.append(len(tokens))
        out = real_eval(tokens, *args, **kw)
        if after is not None:
            after(sizes)
        return out

    monkeypatch.setattr(engine, "eval", recorded)
    return sizes


def test_a_long_prefill_stops_between_chunks_when_cancelled(engine, monkeypatch):
    """Esc during a long prompt: the prefill checks the cancel flag between chunks, the decoder ends
    with stop reason "cancelled", and the chunks evaluated so far are reused next time."""
    import threading

    from sense_local.speculative.loop import SpecDecoder

    prompt = chat(engine, "Summarise this. " + "The quick brown fox jumps over the lazy dog. " * 200)
    assert len(prompt) > 3 * engine.n_batch
    engine.reset()
    cancel = threading.Event()
    sizes = _eval_sizes(engine, monkeypatch, lambda sizes: len(sizes) == 2 and cancel.set())  # Esc in chunk 2
    decoder = SpecDecoder(engine, method="ar")
    events = list(decoder.generate(prompt, 16, cancel=cancel))
    monkeypatch.undo()
    assert events == [] and decoder.stats.stop_reason == "cancelled" and len(sizes) == 2
    assert engine.n_past == sum(sizes) and engine.tokens == list(prompt[: sum(sizes)])
    decoder = SpecDecoder(engine, method="ar")
    assert len(list(decoder.generate(prompt, 4))) == 4  # the rest of the prompt, then the reply


def test_a_long_prefill_reports_its_progress(engine, monkeypatch):
    import threading

    from sense_local import prefill_reuse

    monkeypatch.setattr(prefill_reuse, "_chunks", prefill_reuse.weakref.WeakKeyDictionary())  # none learned
    engine.reset()
    prompt = engine.tokenize(PASSAGE * 30)
    assert len(prompt) > 3 * prefill_reuse.CANCEL_CHUNK
    sizes, seen = _eval_sizes(engine, monkeypatch), []
    engine.prefill(prompt, cancel=threading.Event(), progress=lambda done, total: seen.append((done, total)))
    # once before the first chunk (the front end says "reading" at once), then after each chunk
    assert [d for d, _ in seen] == [sum(sizes[:i]) for i in range(len(sizes))]
    assert sizes[0] == prefill_reuse.CANCEL_CHUNK and len(seen) >= 2
    assert all(t == len(prompt) for _, t in seen) and seen[-1][0] < len(prompt)
    again = []  # reused: nothing is read again, nothing reported
    engine.prefill(prompt, cancel=threading.Event(), progress=lambda done, total: again.append(done))
    assert again == []


@pytest.mark.parametrize("quick", [True, False])
def test_prefill_chunks_grow_while_they_are_quick(engine, monkeypatch, quick):
    """A cancellable prefill's chunks double, up to n_batch, while each takes under
    CHUNK_SECONDS (a fast model pays for small decodes), and the size is kept for the next prefill;
    where chunks are slow they stay at CANCEL_CHUNK."""
    import threading

    from sense_local import prefill_reuse

    monkeypatch.setattr(prefill_reuse, "_chunks", prefill_reuse.weakref.WeakKeyDictionary())
    monkeypatch.setattr(prefill_reuse, "CHUNK_SECONDS", 1e6 if quick else 0.0)
    prompt = engine.tokenize(PASSAGE * 80)
    assert len(prompt) > 4 * engine.n_batch
    engine.reset()
    sizes = _eval_sizes(engine, monkeypatch)
    engine.prefill(prompt, cancel=threading.Event())
    first = prefill_reuse.CANCEL_CHUNK
    want = [first, 2 * first, 4 * first] if quick else [first] * 3
    assert sizes[:3] == want and sum(sizes) == len(prompt)
    assert prefill_reuse.prefill_chunk(engine) == (engine.n_batch if quick else first)
    engine.reset()
    sizes.clear()
    engine.prefill(prompt, cancel=threading.Event())
    assert sizes[0] == (engine.n_batch if quick else first)


def test_one_token_step_gives_evals_logits_and_commits_the_token(engine):
    """`eval_one`, plain decoding's step, is `eval([t], outputs="last", with_keys=False)`: the same
    row at the same position, the token committed, and the right row again after a long decode has
    had llama.cpp's output buffer grown (the step keeps a view of that buffer)."""
    tokens = engine.tokenize(PASSAGE)
    engine.prefill(tokens[:-6], outputs="last")
    steps = [engine.eval_one(t).logits.copy() for t in tokens[-6:-3]]
    assert engine.tokens == tokens[:-3] and all(type(t) is int for t in engine.tokens)
    engine.truncate(len(tokens) - 6)
    evals = [engine.eval([t], outputs="last", with_keys=False).logits.copy() for t in tokens[-6:-3]]
    for step, ref in zip(steps, evals):
        assert step.shape == (1, engine.n_vocab)
        np.testing.assert_array_equal(step, ref)
    assert not np.array_equal(steps[0], steps[1])  # each its own position's row
    # a 200-row decode with every row an output, then the step again: the row it reads must be the new one
    engine.eval(np.arange(1000, 1200, dtype=np.int32), outputs="all")
    engine.truncate(len(tokens) - 3)
    after = engine.eval_one(tokens[-3]).logits.copy()
    engine.truncate(len(tokens) - 3)
    np.testing.assert_array_equal(after, engine.eval([tokens[-3]], outputs="last", with_keys=False).logits)


def test_one_token_step_with_key_states_gives_evals_and_caches_them(engine):
    tokens = engine.tokenize(PASSAGE)
    engine.prefill(tokens[:-4], outputs="keys", with_keys=True)
    for t in tokens[-4:-1]:
        step = engine.eval_one(t, with_keys=True)
    last_keys = step.keys.copy()  # a view valid until the next eval
    assert last_keys.shape == (1, engine.n_embd)
    cached = engine.committed_keys(len(tokens) - 1).copy()  # the steps' states joined the prompt's
    engine.truncate(len(tokens) - 4)
    ref = engine.eval(tokens[-4:-1], outputs="all", with_keys=True)
    np.testing.assert_allclose(cached[-3:], ref.keys, atol=1e-3)  # one row a decode against three in one
    np.testing.assert_allclose(last_keys, ref.keys[-1:], atol=1e-3)
    assert not np.allclose(cached[-1], cached[-2])


def test_one_token_step_past_the_context_is_a_clear_error(engine):
    engine.reset()
    filler = np.full(engine.n_ctx, 100, dtype=np.int32)
    engine.eval(filler, 0, outputs="last", with_keys=False)
    with pytest.raises(ContextOverflowError, match="context full"):
        engine.eval_one(100)
    assert engine.n_past == engine.n_ctx
    engine.reset()
