"""Chat prompts rendered with the model's own template (GGUF `tokenizer.chat_template`), in
llama-cpp-python's sandboxed Jinja environment. Models without a template fall back to ChatML."""
from __future__ import annotations

from collections.abc import Sequence

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(engine, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = engine.meta("tokenizer.chat_template") or CHATML
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=engine.detokenize_special(engine.eos_id),
        bos_token=engine.detokenize_special(engine.bos_id),
        add_generation_prompt=add_generation_prompt,
    )
    return formatter(messages=list(messages)).prompt


def chat_tokens(engine, messages: Sequence[dict]) -> list[int]:
    """Token ids of a rendered chat: special tokens parsed, BOS added only if the template lacks it."""
    text = render_chat(engine, messages)
    tokens = engine.tokenize(text, add_special=False, parse_special=True)
    if engine.add_bos and (not tokens or tokens[0] != engine.bos_id):
        tokens.insert(0, engine.bos_id)
    return tokens


def fit_chat(engine, messages: Sequence[dict], reserve: int) -> tuple[list[int], int]:
    """Tokens of the conversation with the fewest oldest messages dropped that leaves `reserve`
    tokens of room for the reply; returns (tokens, number of messages dropped). A system message is
    kept. Raises ContextOverflowError if even the newest message alone does not fit.

    The count is found by bisection (the rendered chat only shrinks as more is dropped): ~log2(n)
    renderings, not one per dropped message (500 messages took 45 s one by one)."""
    from .errors import ContextOverflowError

    messages = list(messages)
    keep = 1 if messages and messages[0]["role"] == "system" else 0

    def without(n: int) -> list[int]:
        return chat_tokens(engine, messages[:keep] + messages[keep + n :])

    def fits(tokens: list[int]) -> bool:
        return len(tokens) + reserve <= engine.n_ctx

    tokens = without(0)
    if fits(tokens):
        return tokens, 0
    most = len(messages) - keep - 1  # the newest message always stays
    last = without(most)
    if not fits(last):
        raise ContextOverflowError(
            f"prompt has {len(last)} tokens (and {reserve} are kept for the reply) but the context holds "
            f"{engine.n_ctx}; shorten it or raise --ctx"
        )
    return fewest(1, most, last, without, fits)


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
