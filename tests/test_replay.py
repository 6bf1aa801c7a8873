"""The replays (benchmarks/replay_bench.py, replay_returning_user.py): the product's own drafters,
SENSE's included, replayed on the real 135M's recorded greedy outputs and key states, with real
USearch files for the reply history."""
from __future__ import annotations

import numpy as np

from benchmarks.replay_bench import record_keys, recorded_reply, replay_method
from benchmarks.replay_returning_user import replay_pass
from sense_local.chat_template import chat_tokens
from sense_local.speculative.cost import CostCurve

# a gentle curve (drafts pay from an estimate of ~0.4): what is tested is where drafts are accepted
GENTLE = CostCurve((1, 2, 4, 8, 16, 32), (1.0, 1.2, 1.4, 1.8, 2.6, 4.2))
PASSAGE = ("The pass statement is a null operation: when it is executed, nothing happens. It is "
           "useful as a placeholder when a statement is required syntactically, but no code needs "
           "to be executed.")


def _recorded(engine, name: str, text: str, max_tokens: int = 48) -> dict:
    return recorded_reply(engine, name, "grounded", chat_tokens(engine, [{"role": "user", "content": text}]), max_tokens)


def test_sense_replays_on_the_recorded_key_states_and_drafts_the_copy(engine, tmp_path):
    task = _recorded(engine, "quote", "Repeat this text exactly:\n" + PASSAGE)
    keys = record_keys(engine, [task], tmp_path / "keys.npz")
    n = len(task["prompt"]) + len(task["output"]) + int(task["eos"])
    assert keys["quote"].shape == (n, engine.n_embd)  # one key state per position of the recording
    with np.load(tmp_path / "keys.npz") as saved:
        assert np.array_equal(saved["quote"], keys["quote"])
    ar = replay_method(task, GENTLE, "ar", engine, keys["quote"], None)
    for method in ("pld", "sense"):
        tokens, forwards, modeled, _ = replay_method(task, GENTLE, method, engine, keys["quote"], None)
        assert tokens == len(task["output"])  # the replay asserts it followed the recording token for token
        assert forwards < 0.75 * ar[1] and modeled < ar[2]  # the copied parts went in drafts, and paid here

    # zeroed key states: the neighbours it finds are arbitrary positions, not the copy's
    blind = replay_method(task, GENTLE, "sense-neighbours", engine, np.zeros_like(keys["quote"]), None)
    seen = replay_method(task, GENTLE, "sense-neighbours", engine, keys["quote"], None)
    assert seen[1] < blind[1]  # the recorded states are what its drafts come from


def test_the_returning_users_history_drafts_a_reply_it_has_seen(engine, tmp_path):
    question = "Explain what a Python list comprehension is, with an example."
    first = _recorded(engine, "ru-0", question, 40)
    tasks = [first, dict(first, name="ru-1")]  # the same question asked again in a new conversation
    keys = record_keys(engine, tasks, tmp_path / "keys.npz")
    with_history = replay_pass("sense", tasks, keys, engine, GENTLE, True)
    without = replay_pass("sense", tasks, keys, engine, GENTLE, False)
    assert with_history[1]["accepted"].get("history", 0) + with_history[1]["accepted"].get("history-ngram", 0) > 10
    assert with_history[1]["forwards"] < without[1]["forwards"]
    assert "history" not in with_history[0]["drafted"]  # the first reply had no history to draft from
