"""Methods are registered recipes: (drafter, acceptance rule); a drafter made with tree=True drafts
token trees. One line each."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SenseError
from .drafters.base import Drafter
from .drafters.pld import PromptLookupDrafter
from .drafters.recycle import RecycleDrafter
from .drafters.rest import RestDrafter
from .drafters.sense import SenseDrafter
from .copy_stops import copy_stops, reply_starts
from .rewrap import rewrapped_tokens

RECALL = "history-ngram"  # SENSE's exact n-gram drafts from the reply history (the neighbours' are "history")

if TYPE_CHECKING:
    from .speculator import Speculator


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    make_drafter: Callable[[Speculator], Drafter] | None  # a new drafter for a reply (None: plain decoding)
    rule: str = "exact"  # exact (greedy; sampling when temperature > 0) | soft
    needs_store: bool = False


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


register(Method("ar", "plain autoregressive decoding (no drafts)", None))
def _lookup(s: Speculator) -> PromptLookupDrafter:
    special = s.engine.special_mask  # [V] the template's control and end-of-generation tokens
    return PromptLookupDrafter(rewrap=lambda tokens: rewrapped_tokens(s.engine, tokens),
                               fixed=lambda token: bool(special[token]),
                               stops=lambda tokens: sorted({*copy_stops(s.engine, tokens), *reply_starts(tokens, special)}))


def _sense(s: Speculator, *, context: bool = True, docs: bool = True, tree: bool = False,
           lexical: bool = False, recycle: bool = False) -> SenseDrafter:
    """SENSE over the live context and/or the store's documents, and the reply history (when the
    speculator keeps one), in the speculator's buffers."""
    history = s.usable_history()
    neighbours_estimate, recall_estimate = s.history_estimates() if history is not None else (None, None)
    recall = (RestDrafter(None, index=history, source=RECALL, estimate=recall_estimate)
              if lexical and history is not None else None)
    return SenseDrafter(s.engine, use_context=context, docs=s.store if docs else None, tree=tree,
                        lexical=_lookup(s) if lexical else None, keys=s.key_states(),
                        context=s.context_store() if context else None, history=history, recall=recall,
                        history_estimate=neighbours_estimate, recycle=s.recycle_table if recycle else None)


register(Method("pld", "prompt lookup: last n-gram (n=4..1) matched in prompt + output", _lookup))
register(Method("recycle", "Token Recycling: the target's own top-8 candidates after each token, drafted as a tree",
                lambda s: RecycleDrafter(s.recycle_table())))
register(Method("rest", "REST: longest suffix match in the documents' tokens",
                lambda s: RestDrafter(s.store, index=s.ngram_index()), needs_store=True))
# SENSE drafts token trees by default. Over six 2-3-rep quick-suite runs, grounded tau was 2.15-2.32
# for the tree against 1.76-2.06 for the chain, at 1.24-1.33x against 1.22-1.29x; docqa and open
# were level. docqa-rag medians came out lower (1.37-1.45 vs 1.65-1.71), mostly where one of the
# two parted from ar at a near-tie and wrote other text. The chain stays as an ablation.
# SENSE competes its neighbours' drafts with the exact n-gram match of the same context (the
# lexical drafter), so it is never shorter than prompt lookup where the text is a copy (issue 18).
# It grafts the target's recycled candidates (Token Recycling) around and after its draft where the cost
# curve lets such drafts pay (c(2) under ~1.62: not on this AMD EPYC's measured curve, where it is the
# same as without them; the prior curve a fresh install starts from, c(2) 1.5, opens it until the
# machine's own is learned); the 1.5B under --free-verification, chat kinds: README, "Where
# verification is cheap".
register(Method("sense", "SENSE: key-state neighbours in the live context and the documents (if loaded), "
                "tree drafts, with the exact n-gram match competing and the target's recycled candidates "
                "grafted where verification is cheap",
                lambda s: _sense(s, tree=True, lexical=True, recycle=True)))
register(Method("sense-no-recycle", "SENSE ablation: no recycled candidates grafted",
                lambda s: _sense(s, tree=True, lexical=True)))
register(Method("sense-neighbours", "SENSE ablation: key-state neighbours only (no n-gram match)",
                lambda s: _sense(s, tree=True)))
register(Method("sense-context", "SENSE ablation: live context store only",
                lambda s: _sense(s, docs=False, tree=True)))
register(Method("sense-docs", "SENSE ablation: document store only",
                lambda s: _sense(s, context=False, tree=True), needs_store=True))
register(Method("sense-chain", "SENSE ablation: chain drafts (the trie's heaviest path only)",
                lambda s: _sense(s)))
register(Method("sense-context-chain", "SENSE ablation: live context store only, chain drafts",
                lambda s: _sense(s, docs=False)))
register(Method("sense-docs-chain", "SENSE ablation: document store only, chain drafts",
                lambda s: _sense(s, context=False), needs_store=True))
register(Method("sense-soft", "SENSE chain drafts with soft-gated evaluation: semantically equivalent drafts accepted",
                lambda s: _sense(s, lexical=True), rule="soft"))


# The one default of every front end (generate, ask, chat, the TUI, the server), chosen by measurement
# on the default model (Qwen2.5-Coder-1.5B, quick suite, 2 reps, 2 CPU cores): pld and sense are level
# (grounded 2.01x vs 2.10x, docqa-rag 1.53x vs 1.45x, code 2.54x vs 2.87x, open 0.99x vs 1.00x), and
# pld's prefill needs no key states (with them llama.cpp runs the LM head over every prompt row).
DEFAULT_METHOD = "pld"


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise SenseError(f"unknown method '{name}'; known: {', '.join(METHODS)}") from None
