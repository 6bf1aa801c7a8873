"""Methods are registered recipes: (drafter, draft shape, acceptance rule). One line each."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SenseError
from .drafters.base import Drafter
from .drafters.pld import PromptLookupDrafter


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    make_drafter: Callable[[], Drafter] | None  # None: plain autoregressive decoding
    shape: str = "chain"  # chain | tree
    rule: str = "exact"  # exact (greedy; sampling when temperature > 0) | soft


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("ar", "plain autoregressive decoding (no drafts)", None))
register(Method("pld", "prompt lookup: last n-gram (n=4..1) matched in prompt + output", PromptLookupDrafter))


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise SenseError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None
