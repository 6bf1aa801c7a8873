"""The everyday chat kinds of the benchmark (issue 31) and the returning user's conversations."""
from __future__ import annotations

from sense_local.bench.chat_tasks import RETURNING_USER
from sense_local.bench.tasks import CHAT_KINDS, build_tasks
from sense_local.chat_template import chat_tokens


def test_the_quick_suite_has_four_tasks_of_each_chat_kind():
    tasks = build_tasks("quick")
    assert {k: sum(t.kind == k for t in tasks) for k in CHAT_KINDS} == {k: 4 for k in CHAT_KINDS}
    assert len({t.name for t in tasks}) == len(tasks)


def test_a_chat_task_gives_the_model_the_earlier_turn_before_its_follow_up(engine):
    task = next(t for t in build_tasks("quick") if t.kind == "chat")
    (question, answer), = task.earlier
    prompt = engine.detokenize(chat_tokens(engine, task.messages()))
    assert prompt.index(question) < prompt.index(answer) < prompt.rindex(task.prompt)
    alone = engine.detokenize(chat_tokens(engine, [{"role": "user", "content": task.prompt}]))
    assert answer not in alone


def test_the_returning_user_asks_thirty_different_questions():
    assert len(RETURNING_USER) == 30 and len(set(RETURNING_USER)) == 30
