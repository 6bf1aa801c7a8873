"""What a conversation's speculative decoding keeps across its replies, in one object made once per
conversation (and so once per server model: the server keeps one conversation a model).

Each reply gets a new decoder (loop.py) and new drafters (their acceptance estimates start from
their priors every reply, as they always have); what outlives a reply lives here, never on the
engine, the store or in module globals:
  * the cost curve replies start from (cost.CurveMemory: loaded once, kept as replies learn it),
  * the soft rule's per-model tables (token embeddings, protected tokens), per set of options,
  * the document store's n-gram index (REST), made on first use for the store in use,
  * SENSE's buffers: the key states of the committed positions, which the loop hands over
    (`Drafter.add_keys`), and the live context store searched with them,
  * a slot for a source of earlier conversations to draft from (issue 31; nothing reads it yet).
"""
from __future__ import annotations

from typing import Protocol

from ..datastore.ngram_index import NgramIndex
from ..key_cache import KeyStateCache
from .context_store import ContextStore
from .cost import CurveMemory
from .drafters.base import Drafter
from .drafters.prediction import PredictionDrafter
from .verify import SoftOptions, SoftVerifier


class HistorySource(Protocol):
    """Earlier conversations' tokens as a draft source (issue 31 defines what it offers)."""


class Speculator:
    def __init__(self, engine, store=None, *, remember_cost: bool = True):
        """`store`: the open DocumentStore drafts may retrieve from (None: none). `remember_cost`:
        keep what replies learn of the cost curve on disk for later runs (a conversation does; a
        one-off decoder, make_decoder without a speculator, does not)."""
        self.engine = engine  # the target: its vocabulary and shape for drafters, its file for the tables
        self.store = store
        self.cost = CurveMemory(engine, remember=remember_cost)
        self.history: HistorySource | None = None  # issue 31
        self.drafter: Drafter | None = None  # the latest reply's
        self._soft: dict[SoftOptions, SoftVerifier] = {}
        self._ngram_index: NgramIndex | None = None  # of `store`, made on first use
        self._keys: KeyStateCache | None = None
        self._context: ContextStore | None = None

    def use_store(self, store) -> None:
        """Retrieve from `store` (or none) from the next reply on (the same store: nothing changes)."""
        if store is not self.store:
            self.store = store
            self._ngram_index = None

    def drafter_for(self, method, prediction: str = "") -> Drafter | None:
        """A new drafter for a reply by `method` (methods.Method), drafting from the `prediction`
        text first when given (Predicted Outputs); None for plain decoding."""
        drafter = method.make_drafter(self) if method.make_drafter else None
        if prediction:  # the predicted text drafts first; the method's drafter where the output leaves it
            predicted = self.engine.tokenize(prediction, add_special=False)
            drafter = PredictionDrafter(predicted, fallback=drafter)
        self.drafter = drafter
        return drafter

    def soft_verifier(self, theta: float | None) -> SoftVerifier:
        """The soft rule with gate threshold `theta` (None: SoftOptions' default); the model's
        tables are built once and shared by every set of options."""
        opts = SoftOptions() if theta is None else SoftOptions(theta=theta)
        if opts not in self._soft:
            base = next(iter(self._soft.values()), None)
            self._soft[opts] = base.with_options(opts) if base else SoftVerifier(self.engine, opts)
        return self._soft[opts]

    def ngram_index(self) -> NgramIndex:
        """The store's token stream indexed for exact matching (REST)."""
        if self._ngram_index is None:
            self._ngram_index = NgramIndex.of_store(self.store)
        return self._ngram_index

    def key_states(self) -> KeyStateCache:
        """The buffer SENSE keeps the committed positions' key states in (reset every reply)."""
        if self._keys is None:
            self._keys = KeyStateCache(self.engine.n_embd, self.engine.n_ctx)
        return self._keys

    def context_store(self) -> ContextStore:
        """SENSE's live context store (reset every reply)."""
        if self._context is None:
            self._context = ContextStore(self.engine.n_embd, self.engine.n_ctx)
        return self._context
