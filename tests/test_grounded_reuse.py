"""A conversation's evaluated prompt survives grounding and other requests: follow-up turns keep the
passages of earlier ones in place (grounding/memory.py), passages already in the context are cited
by number, and a conversation set aside by another request resumes from its saved state
(kv_slots.py). Real model, real store, real llama.cpp states."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import pydoc_topics_store
from sense_local.conversation import Conversation, ConversationConfig, Finished, Prepared
from sense_local.datastore import DocumentStore
from sense_local.engine import Engine
from sense_local.generation import GenerationOptions
from sense_local.speculative.verify import top2_gap

TOPICS = ["with", "context-managers", "assert", "pass", "lambda", "global"]
QUESTIONS = ["What does the with statement do?", "What do __enter__ and __exit__ do in a with statement?",
             "What does the assert statement do?"]
FOLLOW_UP = "How does a with statement use its context manager?"  # finds two of the first question's passages
OPTIONS = GenerationOptions(method="ar", max_tokens=24)


@pytest.fixture(scope="module")
def store(engine, tmp_path_factory):
    path = pydoc_topics_store(engine, tmp_path_factory, "reuse", TOPICS)
    return DocumentStore.open(path, fingerprint=engine.fingerprint)


@pytest.fixture
def conversation(engine, store):
    engine.reset()
    return Conversation(engine, store=store, config=ConversationConfig(options=OPTIONS))


def run_turn(conversation, messages, **kw) -> tuple[Prepared, Finished]:
    events = list(conversation.reply(messages, **kw))
    return events[0], events[-1]


def common(a, b) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if len(diff) else n


def hold(conversation, questions, **kw) -> list[tuple[Prepared, Finished, list[int]]]:
    """Ask `questions` in turn; per turn (prepared, finished, the engine's tokens after it)."""
    messages, turns = [], []
    for q in questions:
        messages.append({"role": "user", "content": q})
        prepared, finished = run_turn(conversation, messages, **kw)
        messages.append({"role": "assistant", "content": finished.text})
        turns.append((prepared, finished, list(conversation.engine.tokens)))
    return turns


def test_a_follow_up_prompt_starts_with_the_tokens_already_evaluated(conversation):
    (p1, f1, after1), (p2, f2, after2) = hold(conversation, QUESTIONS[:2])
    assert p1.sources and p2.sources  # both grounded
    prompt2 = after2[: p2.prompt_tokens]
    reusable = common(after1, prompt2[:-1])
    assert reusable >= p1.prompt_tokens  # the whole first prompt, passages and all, is the second's start
    assert f2.stats.cached_tokens == reusable  # and usage says exactly what was reused
    assert f1.stats.cached_tokens < p1.prompt_tokens


def test_a_passage_already_in_the_context_is_cited_not_repeated(conversation, engine):
    (p1, _, _), (p2, _, after2) = hold(conversation, [QUESTIONS[0], FOLLOW_UP])
    numbers1 = {s.number for s in p1.sources}
    again = [s for s in p2.sources if s.number in numbers1]
    assert again, "the follow-up on the same topic found none of the first turn's passages"
    prompt = engine.detokenize(after2[: p2.prompt_tokens])
    for s in again:
        assert prompt.count(s.passage.strip()[:200]) == 1  # given once, in the first turn
    _, said, tail = prompt.rpartition("given above")  # only the second question's message says so
    assert said and f"[{again[0].number}]" in tail.split("Question:")[0]
    new = [s for s in p2.sources if s.number not in numbers1]
    assert all(s.number > max(numbers1) for s in new)  # new passages are numbered after the ones above


def test_a_follow_up_with_reused_kv_answers_as_a_full_prefill_does(conversation, engine, model_path):
    (_, _, _), (p2, f2, after2) = hold(conversation, QUESTIONS[:2])
    assert f2.stats.cached_tokens > 0
    prompt2 = after2[: p2.prompt_tokens]
    with Engine(model_path, n_ctx=engine.n_ctx) as fresh:  # the same prompt, every token evaluated
        out = fresh.prefill(prompt2)
        tokens = []
        for _ in range(f2.stats.tokens):
            logits = out.logits[-1]
            tokens.append(int(np.argmax(logits)))
            if top2_gap(logits) < 0.25 or fresh.is_eog(tokens[-1]):
                break
            out = fresh.eval([tokens[-1]], outputs="last", with_keys=False)
    reply = after2[p2.prompt_tokens:]
    n = len(tokens) - 1  # up to a near-tie, where the two may part
    assert reply[:n] == tokens[:n]


def test_a_conversation_resumes_after_another_request(conversation, engine):
    (p1, f1, after1), = hold(conversation, QUESTIONS[:1])
    other = [{"role": "user", "content": "Write a haiku about autumn leaves falling on a quiet pond."}]
    other_prepared, other_done = run_turn(conversation, other, grounded=False)
    other_prompt = engine.tokens[: other_prepared.prompt_tokens]
    assert other_done.stats.cached_tokens == common(after1, other_prompt[:-1]) < p1.prompt_tokens // 2
    assert len(engine.slots) == 1  # the conversation was set aside, not thrown away
    messages = [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": f1.text},
                {"role": "user", "content": QUESTIONS[1]}]
    p2, f2 = run_turn(conversation, messages)
    assert f2.stats.cached_tokens >= p1.prompt_tokens
    assert engine.slots.nbytes <= engine.slots.cap_bytes


def test_saved_states_stay_under_their_cap(engine, store, model_path):
    with Engine(model_path, n_ctx=2048, slot_mib=1) as small:  # 1 MiB: not even one conversation fits
        conv = Conversation(small, store=DocumentStore.open(store.dir, fingerprint=small.fingerprint),
                            config=ConversationConfig(options=OPTIONS))
        hold(conv, QUESTIONS[:1])
        run_turn(conv, [{"role": "user", "content": "Write a haiku about autumn."}], grounded=False)
        assert len(small.slots) == 0 and small.slots.nbytes == 0
        messages = [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": "..."},
                    {"role": "user", "content": QUESTIONS[1]}]
        _, finished = run_turn(conv, messages)
        assert finished.stats.cached_tokens < 48  # nothing kept but the template's start: evaluated again
        assert finished.stats.tokens > 0


def test_old_passages_make_way_before_turns_are_dropped(engine, store, model_path):
    """A context too small for every turn's passages: the oldest questions lose theirs first, and no
    message is left out while that is enough."""
    with Engine(model_path, n_ctx=768) as small:
        conv = Conversation(small, store=DocumentStore.open(store.dir, fingerprint=small.fingerprint),
                            config=ConversationConfig(options=OPTIONS, budget=300))
        turns = hold(conv, QUESTIONS)
        last_prepared, _, after = turns[-1]
        prompt = small.detokenize(after[: last_prepared.prompt_tokens])
        assert last_prepared.dropped == 0
        assert prompt.count("Question: ") < len(QUESTIONS)  # some earlier question went back to plain
        assert QUESTIONS[0] in prompt  # but it is still there
