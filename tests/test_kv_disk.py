"""A conversation reopened in a later run resumes from the state its last turn kept on disk
(kv_disk.py), grounded ones included (their questions as the model saw them are kept too:
grounding/memory.py). Real model, real store, real llama.cpp states; "a later run" is a new Engine
and Conversation over the same folder, the first one closed."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import pydoc_topics_store
from sense_local.conversation import Conversation, ConversationConfig, Finished, Prepared
from sense_local.datastore import DocumentStore
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions
from sense_local.kv_disk import DiskStates, states_dir
from sense_local.speculative.verify import top2_gap

OPTIONS = GenerationOptions(method="ar", max_tokens=24)
PLAIN = ["Name three rivers in Europe.", "Which of them is the longest?", "Which countries does it cross?"]
GROUNDED = ["What does the with statement do?", "What do __enter__ and __exit__ do in a with statement?",
            "What does the assert statement do?"]
N_CTX = 2048


def run(model_path, questions, answers=(), *, disk_mib=64, store=None, options=OPTIONS):
    """A new run: a fresh engine and conversation, the earlier turns (`answers` to the first
    questions) sent back as a client sends them, then each remaining question asked. Returns
    (prepared, finished, the engine's tokens after it) per question asked, closing the engine."""
    with Engine(model_path, n_ctx=N_CTX, disk_mib=disk_mib) as engine:
        docs = None if store is None else DocumentStore.open(store, fingerprint=engine.fingerprint)
        conv = Conversation(engine, store=docs, config=ConversationConfig(options=options))
        messages = []
        for q, a in zip(questions, answers):
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        turns = []
        for q in questions[len(answers):]:
            messages.append({"role": "user", "content": q})
            events = list(conv.reply(messages))
            prepared, finished = events[0], events[-1]
            assert isinstance(prepared, Prepared) and isinstance(finished, Finished)
            messages.append({"role": "assistant", "content": finished.text})
            turns.append((prepared, finished, list(engine.tokens)))
        return turns


def common(a, b) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if len(diff) else n


def test_a_reopened_chat_resumes_from_its_kept_state(model_path):
    first = run(model_path, PLAIN[:2])
    (_, f1, _), (p2, f2, after2) = first
    # a later run: the client sends the two turns back and asks a third question
    (p3, f3, after3), = run(model_path, PLAIN, [f1.text, f2.text])
    prompt3 = after3[: p3.prompt_tokens]
    kept = common(after2, prompt3[:-1])
    assert kept > p2.prompt_tokens  # the whole second turn, its reply included, is the new prompt's start
    assert f3.stats.cached_tokens == kept  # and it was not evaluated again
    # without the disk, the same run evaluates everything, and answers alike (up to a near-tie)
    (q3, g3, cold), = run(model_path, PLAIN, [f1.text, f2.text], disk_mib=0)
    assert g3.stats.cached_tokens == 0 and cold[: q3.prompt_tokens] == prompt3
    reply, cold_reply = after3[p3.prompt_tokens:], cold[q3.prompt_tokens:]
    n = common(reply, cold_reply)
    if n < min(len(reply), len(cold_reply)):  # they may part only where the model had a near-tie
        with Engine(model_path, n_ctx=N_CTX) as fresh:
            assert top2_gap(fresh.prefill(prompt3 + reply[:n]).logits[-1]) < 0.25


def test_an_opened_conversation_reads_what_is_kept_on_its_own_thread_and_resumes(model_path, monkeypatch):
    """Conversation.open reads the index of kept conversations before the first question (a
    thread of its own): the question is not kept waiting for it, and resumes as without."""
    (_, f1, _), (p2, f2, after2) = run(model_path, PLAIN[:2])
    readers, read = [], DiskStates._index
    monkeypatch.setattr(DiskStates, "_index", lambda self: readers.append(threading.current_thread().name) or read(self))
    conv = Conversation.open(ConversationConfig(model=str(model_path), n_ctx=N_CTX, options=OPTIONS, history=False,
                                                cache_disk_mib=64))
    try:
        messages = [{"role": "user", "content": PLAIN[0]}, {"role": "assistant", "content": f1.text},
                    {"role": "user", "content": PLAIN[1]}, {"role": "assistant", "content": f2.text},
                    {"role": "user", "content": PLAIN[2]}]
        prepared, *_, finished = conv.reply(messages)
        prompt3 = list(conv.engine.tokens)[: prepared.prompt_tokens]
    finally:
        conv.engine.close()
    assert "kv-disk-index" in readers
    assert finished.stats.cached_tokens == common(after2, prompt3[:-1]) > p2.prompt_tokens


def test_a_reopened_grounded_chat_finds_its_passages_in_place(engine, model_path, tmp_path_factory, monkeypatch):
    store = pydoc_topics_store(engine, tmp_path_factory, "kv-disk", ["with", "context-managers", "assert", "pass"])
    (p1, f1, after1), = run(model_path, GROUNDED[:1], store=store)
    assert p1.sources
    (p2, f2, after2), = run(model_path, GROUNDED[:2], [f1.text], store=store)
    assert f2.stats.cached_tokens >= p1.prompt_tokens  # the first turn's passages are where they were
    # the same two turns in one run: the prompt the reopened run built is the one it would have had
    monkeypatch.setenv("SENSE_KV_STATES", str(tmp_path_factory.mktemp("kv-states-one-run")))
    _, (q2, g2, once2) = run(model_path, GROUNDED[:2], store=store)
    assert after2[: p2.prompt_tokens] == once2[: q2.prompt_tokens]
    reply, once = after2[p2.prompt_tokens:], once2[q2.prompt_tokens:]
    n = common(reply, once)
    if n < min(len(reply), len(once)):  # they may part only where the model had a near-tie
        with Engine(model_path, n_ctx=N_CTX) as fresh:
            assert top2_gap(fresh.prefill(after2[: p2.prompt_tokens] + reply[:n]).logits[-1]) < 0.25


LONGER = GenerationOptions(method="ar", max_tokens=64)  # a turn long enough to be kept (kv_slots.SAVE_MIN)


def test_kept_states_stay_under_their_cap_and_bad_files_are_skipped(model_path):
    run(model_path, PLAIN[:1], options=LONGER)
    with Engine(model_path, n_ctx=N_CTX, disk_mib=64) as engine:
        folder = states_dir(engine)
    files = sorted(folder.glob("*.kv.npz"))
    assert len(files) == 1
    files[0].write_bytes(files[0].read_bytes()[:1000])  # cut short, as by a crash outside our write
    (p, f, _), = run(model_path, PLAIN[:1], options=LONGER)
    assert f.stats.cached_tokens < p.prompt_tokens // 2 and f.text  # evaluated again, answered
    assert all(len(x.read_bytes()) > 1000 for x in folder.glob("*.kv.npz"))  # the bad file is gone
    one = sum(x.stat().st_size for x in folder.glob("*.kv.npz"))
    cap_mib = one * 3 // 2 // (1 << 20) + 1  # room for one such conversation, not for three
    assert 3 * one > cap_mib << 20
    with Engine(model_path, n_ctx=N_CTX, disk_mib=cap_mib) as engine:
        conv = Conversation(engine, config=ConversationConfig(options=LONGER))
        for q in PLAIN:  # three conversations of one question each
            list(conv.reply([{"role": "user", "content": q}]))
    sizes = [x.stat().st_size for x in folder.glob("*.kv.npz")]
    assert sizes and sum(sizes) <= cap_mib << 20
    assert not list(folder.glob("*.tmp"))


def test_no_disk_keeps_nothing(model_path, tmp_path):
    run(model_path, PLAIN[:1], disk_mib=0, options=LONGER)
    assert not list(Path(os.environ["SENSE_KV_STATES"]).rglob("*.kv.npz"))
