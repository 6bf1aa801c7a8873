"""The reply history (issue 31): every finished reply kept per model and owner, crash-safe and
bounded, and searched by SENSE as a third source, on the real 135M and real USearch files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sense_local.bench.runner import first_divergence
from sense_local.conversation import Conversation, Finished
from sense_local.datastore.writer_lock import StoreBusyError
from sense_local.generation import GenerationOptions
from sense_local.reply_history import ReplyHistory, history_dir, owner_for_key
from sense_local.speculative.types import TokenEvent

from conftest import ROOT, run_cli

QUESTION = "Explain what a Python list comprehension is, with an example."


def _turn(conversation: Conversation, text: str, method: str = "sense", max_tokens: int = 64):
    """(the Finished event, the reply's tokens, tokens per source)"""
    tokens, sources, finished = [], {}, None
    for ev in conversation.reply([{"role": "user", "content": text}],
                                 options=GenerationOptions(method=method, max_tokens=max_tokens)):
        if isinstance(ev, TokenEvent) and ev.token >= 0:
            tokens.append(ev.token)
            sources[ev.source] = sources.get(ev.source, 0) + 1
        elif isinstance(ev, Finished):
            finished = ev
    return finished, tokens, sources


@pytest.fixture
def history(engine, tmp_path):
    h = ReplyHistory.open(engine, directory=tmp_path / "history")
    yield h
    h.close()


def _with_history(engine, history) -> Conversation:
    conversation = Conversation(engine)
    conversation.speculator.history = history
    return conversation


def test_a_reply_is_kept_with_its_key_states_and_drafts_the_same_answer_in_a_new_conversation(engine, history):
    engine.reset()
    first, tokens, _ = _turn(_with_history(engine, history), QUESTION)
    history.flush()
    size = history.size()
    assert (size.replies, size.tokens, size.vectors) == (1, len(tokens), len(tokens) - 1)
    assert np.array_equal(history.token_array[: len(tokens)], tokens)
    # the replies' n-grams go down to one token: a token written once finds what followed it
    k = next(i for i in range(len(tokens) - 2) if tokens.count(tokens[i]) == 1)
    conts, n = history.lookup(np.array([max(tokens) + 1, tokens[k]], np.int32), length=2)
    assert n == 1 and conts.tolist() == [tokens[k + 1 : k + 3]]

    # a new conversation (the earlier reply is not in its context) asked the same: drafted from the history
    again, again_tokens, sources = _turn(_with_history(engine, history), QUESTION)
    plain, plain_tokens, _ = _turn(Conversation(engine), QUESTION)
    assert sources.get("history", 0) >= len(tokens) // 2, sources
    assert again.stats.tau > plain.stats.tau + 1.0, (again.stats.tau, plain.stats.tau)
    # lossless: the same text as SENSE without a history (up to a near-tie of batched evaluation)
    at = first_divergence(again_tokens, plain_tokens)
    assert at is None or at > len(plain_tokens) // 2, at


def test_replies_decoded_without_key_states_are_kept_as_tokens_only(engine, history):
    engine.reset()
    _, tokens, _ = _turn(_with_history(engine, history), QUESTION, method="pld", max_tokens=24)
    history.flush()
    size = history.size()
    assert (size.replies, size.tokens, size.vectors) == (1, len(tokens), 0)


def test_the_history_outlives_the_process_and_reopens_with_its_replies(engine, tmp_path):
    directory = tmp_path / "h"
    h = ReplyHistory.open(engine, directory=directory)
    rng = np.random.default_rng(0)
    h.append([5, 6, 7, 8], rng.standard_normal((3, engine.n_embd)).astype(np.float32))
    h.close()
    again = ReplyHistory.open(engine, directory=directory)
    try:
        size = again.size()
        assert (size.replies, size.tokens, size.vectors) == (1, 4, 3)
        found = again.search(rng.standard_normal(engine.n_embd).astype(np.float32), k=2, continuation=2)
        assert set(found.positions[0].tolist()) <= {0, 1, 2}
    finally:
        again.close()


def test_the_cap_drops_the_oldest_replies_and_the_index_keeps_only_live_vectors(engine, tmp_path):
    h = ReplyHistory.open(engine, directory=tmp_path / "h", cap_tokens=100)
    rng = np.random.default_rng(1)
    try:
        for i in range(12):  # 12 replies of 30 tokens: 360 tokens through a 100-token cap
            h.append(list(range(i * 30, i * 30 + 30)), rng.standard_normal((29, engine.n_embd)).astype(np.float32))
        size = h.size()
        assert size.tokens <= 100 and size.replies >= 2
        docs = sorted(h.store.manifest.documents.values(), key=lambda d: d.start)
        assert docs[-1].start == 11 * 30  # the newest is kept, the oldest went
        assert np.array_equal(h.store.tokens(docs[-1].start, docs[-1].end), np.arange(330, 360))
        assert size.vectors == sum(d.n_tokens - 1 for d in docs)
        assert h.store.index.stats.nodes <= 2 * size.vectors  # tombstones were dropped by a rebuild
        found = h.search(rng.standard_normal(engine.n_embd).astype(np.float32), k=8, continuation=1)
        live = {p for d in docs for p in range(d.start, d.end - 1)}
        assert set(found.positions[0][found.positions[0] >= 0].tolist()) <= live
    finally:
        h.close()


def test_a_history_another_writer_holds_is_left_alone_and_said_once(engine, tmp_path, monkeypatch):
    from sense_local.conversation import Prepared

    monkeypatch.setenv("SENSE_HOME", str(tmp_path / "home"))
    holder = ReplyHistory.open(engine)  # as another process (or a conversation not yet closed) would
    try:
        with pytest.raises(StoreBusyError):
            ReplyHistory.open(engine)
        conversation = Conversation(engine)
        conversation.open_history()
        assert conversation.speculator.history is None
        notes = []
        for _ in range(2):
            options = GenerationOptions(method="sense", max_tokens=4)
            prepared = next(ev for ev in conversation.reply([{"role": "user", "content": "Hi"}], options=options)
                            if isinstance(ev, Prepared))
            notes.append([n for n in prepared.notes if "reply history" in n])
        assert len(notes[0]) == 1 and notes[0][0].startswith("no reply history this session:") and notes[1] == []
        holder.close()
        conversation.open_history()  # free again: taken (as a model switch in the TUI hands it over)
        assert conversation.speculator.history is not None
        conversation.close_history()
    finally:
        holder.close()


def test_each_api_key_has_its_own_history_and_the_key_is_not_written(engine):
    a, b = owner_for_key("secret-a"), owner_for_key("secret-b")
    assert a != b and owner_for_key(None) == "local"
    assert "secret" not in str(history_dir(engine, a))


def test_cli_keeps_generate_replies_shows_them_and_clears_them(tmp_path):
    env = {"SENSE_HOME": str(tmp_path / "home")}
    ok = run_cli("generate", "Name three fruits.", "--max-tokens", "12", "--method", "sense", env=env)
    assert ok.returncode == 0, ok.stderr
    run_cli("generate", "Name three colours.", "--max-tokens", "12", "--no-history", env=env)
    shown = run_cli("history", "--json", env=env)
    rows = json.loads(shown.stdout)["histories"]
    assert len(rows) == 1 and rows[0]["replies"] == 1 and rows[0]["owner"] == "local"
    cleared = run_cli("history", "--clear", env=env)
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    assert json.loads(run_cli("history", "--json", env=env).stdout)["histories"] == []


def test_clearing_a_history_in_use_is_refused_in_one_line(tmp_path):
    env = {"SENSE_HOME": str(tmp_path / "home")}
    script = ("import sys, sense_local as sl; from sense_local.reply_history import ReplyHistory;"
              "e = sl.Engine(sl.resolve_model('test'), n_ctx=256); h = ReplyHistory.open(e);"
              "print('ready', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env={**__import__("os").environ, **env})
    try:
        assert holder.stdout.readline().strip() == "ready"
        refused = run_cli("history", "--clear", env=env)
        assert refused.returncode != 0
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "being written by process" in lines[0], refused.stderr
    finally:
        holder.communicate("", timeout=60)


def test_sense_recalls_a_phrase_of_an_earlier_reply_word_for_word(engine, history):
    """The history's exact n-gram match (RECALL): a reply kept as tokens only (no key states) still
    drafts, from the context's last tokens matched in it."""
    from sense_local.speculative.drafters.rest import RestDrafter
    from sense_local.speculative.methods import RECALL

    reply = list(range(1000, 1040))
    history.append(reply, None)
    history.flush()
    recall = RestDrafter(None, index=history, source=RECALL)
    recall.begin([1, 2, 3, *reply[10:14]])  # a new context ending in 4 tokens of that reply
    draft = recall.propose(8)
    assert draft is not None and draft.source == RECALL
    assert draft.tokens.tolist() == reply[14:22]
    recall.begin([1, 2, 3, 5])  # nothing of it in the history
    assert recall.propose(8) is None


def test_history_drafts_learn_across_replies_and_are_counted_by_source(engine, history):
    from sense_local.speculative.methods import METHODS

    engine.reset()
    conversation = _with_history(engine, history)
    _turn(conversation, QUESTION)
    history.flush()
    again, _, sources = _turn(conversation, QUESTION + " ")  # another prompt: no reuse of the first reply's KV
    neighbours_estimate, _ = conversation.speculator.history_estimates()
    history_keys = [k for k in neighbours_estimate.successes if k[0] == 2 or (k[0] == "pool" and k[1][0] == 2)]
    assert history_keys and len(history_keys) == len(neighbours_estimate.successes)
    assert conversation.speculator.drafter_for(METHODS["sense"]).inner.history_estimate is neighbours_estimate
    by_source = again.stats.drafted_by_source
    assert sum(by_source.values()) == again.stats.drafted and by_source.get("history", 0) >= sources.get("history", 1)


def _recycled_turn(conversation: Conversation, text: str, max_tokens: int = 48):
    """A turn drafted from the recycle table alone where verification is cheap (a GPU's curve):
    (the Finished event, tokens the table drafted and the target accepted)."""
    options = GenerationOptions(method="recycle", max_tokens=max_tokens, free_verification=True)
    events = list(conversation.reply([{"role": "user", "content": text}], options=options))
    recycled = sum(1 for ev in events if isinstance(ev, TokenEvent) and ev.source == "recycle")
    return next(ev for ev in events if isinstance(ev, Finished)), recycled


def test_the_recycle_table_is_kept_with_the_history_and_a_reopened_one_drafts_from_it(engine, tmp_path):
    from sense_local.reply_history import TABLE

    directory = tmp_path / "h"
    history = ReplyHistory.open(engine, directory=directory)
    assert history.table_state is None and history.table_note is None  # nothing kept yet
    engine.reset()
    first = _with_history(engine, history)
    _recycled_turn(first, QUESTION)
    taught = first.speculator.recycle_table()
    history.close()  # the table's write is finished before the history is given up
    assert (directory / TABLE).exists()

    again = ReplyHistory.open(engine, directory=directory)  # as the next process opens it
    try:
        kept = _with_history(engine, again)
        table = kept.speculator.recycle_table()
        assert table is not taught
        for name in table.KEPT:
            assert np.array_equal(getattr(table, name), getattr(taught, name)), name
        # the same question in a conversation that starts from the kept table, and in one that starts empty
        warm, warm_recycled = _recycled_turn(kept, QUESTION)
        cold, cold_recycled = _recycled_turn(Conversation(engine), QUESTION)
        assert warm_recycled > cold_recycled and warm.stats.tau > cold.stats.tau + 0.5, \
            (warm_recycled, cold_recycled, warm.stats.tau, cold.stats.tau)
    finally:
        again.close()


def test_a_kept_recycle_table_that_cannot_be_read_is_said_once_and_replaced(engine, tmp_path, monkeypatch):
    from sense_local.conversation import Prepared
    from sense_local.reply_history import TABLE

    monkeypatch.setenv("SENSE_HOME", str(tmp_path / "home"))
    directory = history_dir(engine)
    ReplyHistory.open(engine).close()  # the history's folder, as an earlier run left it
    (directory / TABLE).write_bytes(b"PK\x03\x04 cut short by a crash of another kind")
    conversation = Conversation(engine)
    conversation.open_history()
    try:
        assert conversation.speculator.history.table_state is None
        options = GenerationOptions(method="recycle", max_tokens=16, free_verification=True)
        events = list(conversation.reply([{"role": "user", "content": QUESTION}], options=options))
        notes = next(ev for ev in events if isinstance(ev, Prepared)).notes
        said = [n for n in notes if "recycle table" in n]
        assert len(said) == 1 and "could not be read" in said[0] and "\n" not in said[0], notes
        assert any(isinstance(ev, Finished) for ev in events)  # the turn goes on, with a new table
    finally:
        conversation.close_history()
    with np.load(directory / TABLE) as kept:  # the new table was written over the broken one
        assert kept["next"].shape == (engine.n_vocab, 8)
        assert (kept["next"][:, 0] >= 0).any()
