"""Chat template rendering from GGUF metadata and UTF-8-safe streaming detokenization."""
from __future__ import annotations

from sense_local.chat_template import chat_tokens, render_chat
from sense_local.detokenize import StreamDetokenizer


def test_chat_template_renders_from_gguf_metadata(engine):
    text = render_chat(engine, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    tokens = chat_tokens(engine, [{"role": "user", "content": "Hi"}])
    im_start = engine.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(im_start) == 1 and tokens.count(im_start[0]) == 3  # default system + user + assistant


def test_stream_detokenizer_holds_back_split_characters():
    pieces = {1: "é".encode()[:1], 2: "é".encode()[1:] + b"t", 3: "🙂".encode()[:2], 4: "🙂".encode()[2:]}
    detok = StreamDetokenizer(pieces.__getitem__)
    out = [detok.push(t) for t in (1, 2, 3, 4)]
    assert out == ["", "ét", "", "🙂"]
    assert detok.flush() == ""


def test_stream_detokenizer_matches_full_decode_on_real_tokens(engine):
    text = "Ünïcödé test — 日本語のテキスト and emoji 🎉🎉 done."
    tokens = engine.tokenize(text, add_special=False)
    detok = StreamDetokenizer(engine.piece)
    streamed = "".join(detok.push(t) for t in tokens) + detok.flush()
    assert streamed == text


def test_a_long_conversation_drops_exactly_the_oldest_messages_that_do_not_fit(engine):
    """fit_chat keeps the most messages that leave room for the reply, found by bisection: one
    more message would not fit, and the system message and the newest one always stay."""
    from sense_local.chat_template import chat_tokens, fit_chat

    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(300):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}: " + "word " * 12})
    messages.append({"role": "user", "content": "What was the last thing I said?"})
    tokens, dropped = fit_chat(engine, messages, reserve=256)
    kept = messages[:1] + messages[1 + dropped:]
    assert tokens == chat_tokens(engine, kept) and len(tokens) + 256 <= engine.n_ctx
    one_more = messages[:1] + messages[dropped:]
    assert len(chat_tokens(engine, one_more)) + 256 > engine.n_ctx  # the fewest dropped
    assert 0 < dropped < len(messages) - 2


def test_each_model_renders_with_its_own_template_however_the_calls_interleave(engine, default_engine):
    """Templates are compiled once each (chat_template._formatter): two models' turns, asked in
    turn, still render each with its own, and with the generation prompt only where asked."""
    chat = [{"role": "user", "content": "Hi"}]
    for _ in range(2):
        small, big = render_chat(engine, chat), render_chat(default_engine, chat)
        assert "You are Qwen" in big and "Qwen" not in small
        assert small.endswith("<|im_start|>assistant\n") and big.endswith("<|im_start|>assistant\n")
        bare = render_chat(engine, chat, add_generation_prompt=False)
        assert bare == small[: -len("<|im_start|>assistant\n")]
