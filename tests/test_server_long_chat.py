"""A conversation longer than the context: the oldest messages are dropped in one pass, and the
response says how many (the `dropped_messages` field and the `X-Sense-Dropped-Messages` header),
through the real server and the `openai` client, checked against the model's own token counts."""
from __future__ import annotations

import openai
import pytest

from sense_local import chat_template
from sense_local.chat_template import chat_tokens, fit_chat
from test_server import Server

CTX = 1024
MAX_TOKENS = 8  # the reply's room: min(max_tokens, ctx / 4) (conversation.reply_reserve)


def long_chat(turns: int, *, system: bool = True) -> list[dict]:
    messages = [{"role": "system", "content": "Be brief."}] if system else []
    for i in range(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant",
                         "content": f"note {i}: " + "word " * (10 + i % 5)})
    messages.append({"role": "user", "content": "Say hi."})
    return messages


def is_fewest(engine, messages: list[dict], dropped: int, reserve: int, n_ctx: int) -> bool:
    """With `dropped` oldest messages (after a system message) left out the chat and the reply's
    room fit the context, and with one fewer they do not (the rendered chat only shrinks as more go)."""
    keep = 1 if messages[0]["role"] == "system" else 0

    def size(n: int) -> int:
        return len(chat_tokens(engine, messages[:keep] + messages[keep + n:])) + reserve

    return size(dropped) <= n_ctx < size(dropped - 1)


@pytest.fixture(scope="module")
def small_ctx():
    s = Server("--ctx", str(CTX))  # the 135M test model
    yield s
    s.stop()


@pytest.mark.parametrize("system", [True, False])
def test_the_response_says_how_many_of_the_oldest_messages_were_dropped(small_ctx, engine, system):
    """Whole and streamed: the reply comes, the field and the header give the same count, and it is
    the fewest oldest messages whose dropping lets the chat and the reply's room fit the context."""
    messages = long_chat(120, system=system)
    client = small_ctx.client()
    raw = client.chat.completions.with_raw_response.create(model="test", messages=messages, max_tokens=MAX_TOKENS,
                                                           temperature=0)
    reply = raw.parse()
    dropped = reply.model_extra["dropped_messages"]
    assert raw.headers["x-sense-dropped-messages"] == str(dropped)
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens >= 1
    assert dropped > 0 and is_fewest(engine, messages, dropped, MAX_TOKENS, CTX)
    keep = 1 if system else 0
    assert reply.usage.prompt_tokens == len(chat_tokens(engine, messages[:keep] + messages[keep + dropped:]))

    with client.chat.completions.with_streaming_response.create(
            model="test", messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True) as streamed:
        assert streamed.headers["x-sense-dropped-messages"] == str(dropped)
        chunks = list(streamed.parse())
    assert chunks[0].model_extra["dropped_messages"] == dropped
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.choices[0].message.content


def test_a_chat_that_fits_drops_nothing_and_has_no_header(small_ctx):
    raw = small_ctx.client().chat.completions.with_raw_response.create(
        model="test", messages=long_chat(4), max_tokens=MAX_TOKENS, temperature=0)
    assert raw.parse().model_extra["dropped_messages"] == 0 and "x-sense-dropped-messages" not in raw.headers


def test_the_newest_message_alone_too_long_is_a_413(small_ctx):
    messages = long_chat(10) + [{"role": "assistant", "content": "ok"},
                                {"role": "user", "content": "word " * 2000}]
    raw = small_ctx.client().chat.completions.with_raw_response
    with pytest.raises(openai.APIStatusError) as caught:
        raw.create(model="test", messages=messages, max_tokens=MAX_TOKENS)
    assert caught.value.status_code == 413 and f"context holds {CTX}" in caught.value.message


def test_fit_chat_renders_the_chat_twice_not_once_per_guess(engine, monkeypatch):
    """One pass: 500 messages are rendered once whole and once cut (the bisection before rendered
    them ~10 times, one by one took 45 s), and the cut is the reference's."""
    calls = []
    render = chat_template.render_chat
    monkeypatch.setattr(chat_template, "render_chat", lambda *a, **k: calls.append(1) or render(*a, **k))
    messages = long_chat(500)
    tokens, dropped = fit_chat(engine, messages, reserve=256)
    assert len(calls) == 2
    monkeypatch.setattr(chat_template, "render_chat", render)
    assert is_fewest(engine, messages, dropped, 256, engine.n_ctx)
    assert tokens == chat_tokens(engine, messages[:1] + messages[1 + dropped:])
