"""Fill-in-the-middle prompts (code completion at a cursor) from the model's own FIM tokens, laid out
as llama-server lays them out (prefix-suffix-middle):

    [BOS] [extra] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID> prompt

`extra` is other files the client sends for context: with the model's repository and file-separator
tokens in the repo-level layout (`<FIM_REP>myproject\\n<FIM_SEP>name\\ntext ... <FIM_SEP>filename\\n`,
Qwen2.5-Coder's), otherwise each file after a "--- snippet ---" line. The code is read as text
(a `<|fim_prefix|>` written in a file stays text); only `prompt` (what the client puts after the
middle marker) is read with special tokens. What does not fit the context loses, in this order, the
extra files' beginning, the prefix's beginning and the suffix's end (the text nearest the cursor stays).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ContextOverflowError, SenseError


class NoFimTokens(SenseError):
    """The model has no fill-in-the-middle tokens."""


@dataclass(frozen=True)
class Infill:
    prefix: str  # the text before the cursor
    suffix: str  # the text after it
    prompt: str = ""  # after the middle marker: the start of the middle the client already has
    extra: tuple[tuple[str, str], ...] = ()  # (file name, text) of other files, for context


@dataclass
class InfillPrompt:
    tokens: list[int]
    truncated: bool  # some of the code did not fit the context and was left out


def check_fim(engine) -> None:
    """NoFimTokens unless the model has prefix, suffix and middle tokens."""
    if not engine.fim.usable:
        raise NoFimTokens(f"the model {engine.path.name} has no fill-in-the-middle tokens (FIM prefix, suffix "
                          "and middle): load a code model that has them, such as the default qwen2.5-coder")


def infill_tokens(engine, infill: Infill, room: int) -> InfillPrompt:
    """The FIM prompt for `infill`, in at most `room` tokens."""
    check_fim(engine)
    fim = engine.fim

    def text(s: str) -> list[int]:
        return engine.tokenize(s, add_special=False, parse_special=False) if s else []

    prefix, suffix = text(infill.prefix), text(infill.suffix)
    middle = engine.tokenize(infill.prompt, add_special=False, parse_special=True) if infill.prompt else []
    extra = _extra(engine, infill.extra, text)
    head = [engine.bos_id] if engine.add_bos and engine.bos_id >= 0 else []
    left = room - len(head) - 3 - len(middle)  # for the code: extra, prefix, suffix
    if left < 1:
        raise ContextOverflowError(f"the prompt after the middle marker has {len(middle)} tokens, more than the "
                                   f"{room} the context leaves for the code; shorten it or raise --ctx")
    take_suffix = min(len(suffix), max(left // 4, left - len(prefix)))
    take_prefix = min(len(prefix), left - take_suffix)
    take_extra = min(len(extra), left - take_suffix - take_prefix)
    tokens = [*head, *extra[len(extra) - take_extra:], fim.pre, *prefix[len(prefix) - take_prefix:],
              fim.suf, *suffix[:take_suffix], fim.mid, *middle]
    cut = take_suffix < len(suffix) or take_prefix < len(prefix) or take_extra < len(extra)
    return InfillPrompt(tokens, cut)


def _extra(engine, files: Sequence[tuple[str, str]], text) -> list[int]:
    if not files:
        return []
    fim = engine.fim
    if fim.rep >= 0 and fim.sep >= 0:  # repo-level layout
        out = [fim.rep, *text("myproject\n")]
        for name, body in files:
            out += [fim.sep, *text(name + "\n"), *text(body)]
        return out + [fim.sep, *text("filename\n")]
    out = []
    for _, body in files:
        out += text("\n\n--- snippet ---\n\n") + text(body)
    return out
