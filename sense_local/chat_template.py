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
