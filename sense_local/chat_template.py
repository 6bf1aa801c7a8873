"""Chat prompts rendered with the model's own template (GGUF `tokenizer.chat_template`), in
llama-cpp-python's sandboxed Jinja environment. Models without a template fall back to ChatML."""
from __future__ import annotations

import functools
from collections.abc import Sequence

from .errors import ContextOverflowError

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(engine, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                tools: Sequence[dict] | None = None) -> str:
    """The chat as the model's template writes it; `tools` (OpenAI's tool shape) go to templates that
    render them (tool_calls.py)."""
    formatter = _formatter(engine.meta("tokenizer.chat_template") or CHATML, engine.detokenize_special(engine.eos_id),
                           engine.detokenize_special(engine.bos_id), add_generation_prompt)
    return formatter(messages=list(messages), tools=list(tools) if tools else None).prompt


@functools.lru_cache(maxsize=8)
def _formatter(template: str, eos: str, bos: str, add_generation_prompt: bool):
    """A template compiled once: Jinja's compile of Qwen2.5's took 8-19 ms, paid on every turn before
    its prompt was read (a server's short question waited ~20 ms where llama-server waits ~6).
    Rendering a compiled template keeps no state, so one serves every thread."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                               add_generation_prompt=add_generation_prompt)


def chat_tokens(engine, messages: Sequence[dict], *, tools: Sequence[dict] | None = None) -> list[int]:
    """Token ids of a rendered chat: special tokens parsed, BOS added only if the template lacks it."""
    return _tokens(engine, render_chat(engine, messages, tools=tools))


def _tokens(engine, text: str) -> list[int]:
    tokens = engine.tokenize(text, add_special=False, parse_special=True)
    if engine.add_bos and (not tokens or tokens[0] != engine.bos_id):
        tokens.insert(0, engine.bos_id)
    return tokens


def fit_chat(engine, messages: Sequence[dict], reserve: int, *,
             tools: Sequence[dict] | None = None) -> tuple[list[int], int]:
    """Tokens of the conversation with the fewest oldest messages dropped that leaves `reserve`
    tokens of room for the reply; returns (tokens, number of messages dropped). A system message is
    kept. Raises ContextOverflowError if even the newest message alone does not fit.

    In one pass: the chat is rendered and tokenized once, each message's share of it counted once
    (`shares`), and the oldest are dropped until the rest fits; the chat so cut is rendered once more
    to confirm it. Where a template's messages do not add up (a share misjudged), the count is mended
    from there one message at a time; where a message's text is not found in the rendering, the
    count is found by bisection (`fewest`). 500 messages took 45 s dropped one by one, re-rendering
    the whole chat after each."""
    messages = list(messages)
    keep = 1 if messages and messages[0]["role"] == "system" else 0
    limit = engine.n_ctx - reserve

    def without(n: int) -> list[int]:
        return chat_tokens(engine, messages[:keep] + messages[keep + n :], tools=tools)

    def fits(tokens: list[int]) -> bool:
        return len(tokens) <= limit

    text = render_chat(engine, messages, tools=tools)
    tokens = _tokens(engine, text)
    if fits(tokens):
        return tokens, 0
    most = len(messages) - keep - 1  # the newest message always stays
    counted = shares(engine, text, messages)
    if counted is None:
        last = without(most)
        if not fits(last):
            raise _overflow(last, reserve, engine)
        return fewest(1, most, last, without, fits)
    n, size = 0, len(tokens)
    while n < most and size > limit:
        size -= counted[keep + n]
        n += 1
    cut, guessed = without(n), n
    while not fits(cut) and n < most:  # the shares counted too few tokens: one more goes
        n += 1
        cut = without(n)
    if not fits(cut):
        raise _overflow(cut, reserve, engine)
    if n == guessed and len(cut) != size:  # the shares did not add up here: one fewer may fit too
        while n > 1 and fits(fewer := without(n - 1)):
            n, cut = n - 1, fewer
    return cut, n


def shares(engine, text: str, messages: Sequence[dict]) -> list[int] | None:
    """[len(messages)] the tokens each message adds to the rendered chat `text`: the text from the
    end of the message before's content to the end of its own (its template text and its content);
    None if a message's content is not found in the rendering in order (a template that alters it)."""
    ends, at = [], 0
    for m in messages:
        content = m.get("content") or ""
        found = text.find(content, at)
        if found < 0:
            return None
        at = found + len(content)
        ends.append(at)
    starts = [0, *ends[:-1]]
    return [len(engine.tokenize(text[a:b], add_special=False, parse_special=True)) for a, b in zip(starts, ends)]


def _overflow(tokens: list[int], reserve: int, engine) -> ContextOverflowError:
    return ContextOverflowError(f"prompt has {len(tokens)} tokens (and {reserve} are kept for the reply) but the "
                                f"context holds {engine.n_ctx}; shorten it or raise --ctx")


def fewest(low: int, high: int, at_high, attempt, fits):
    """(the result of `attempt(n)` for the smallest n in [low, high] whose result `fits`, n) by
    bisection, given `at_high` = attempt(high), which fits; what fits only grows with n."""
    best = at_high
    while low < high:
        mid = (low + high) // 2
        tried = attempt(mid)
        if fits(tried):
            high, best = mid, tried
        else:
            low = mid + 1
    return best, high
