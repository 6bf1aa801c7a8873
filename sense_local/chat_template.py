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
    """Tokens of the conversation with the oldest turns dropped until `reserve` tokens of room are
    left for the reply; returns (tokens, number of messages dropped). A system message is kept.
    Raises ContextOverflowError if even the newest message alone does not fit."""
    from .errors import ContextOverflowError

    messages = list(messages)
    keep_system = 1 if messages and messages[0]["role"] == "system" else 0
    dropped = 0
    tokens = chat_tokens(engine, messages)
    while len(tokens) + reserve > engine.n_ctx and len(messages) > keep_system + 1:
        del messages[keep_system]
        dropped += 1
        tokens = chat_tokens(engine, messages)
    if len(tokens) + reserve > engine.n_ctx:
        raise ContextOverflowError(
            f"prompt has {len(tokens)} tokens (and {reserve} are kept for the reply) but the context holds "
            f"{engine.n_ctx}; shorten it or raise --ctx"
        )
    return tokens, dropped
