"""What a conversation's speculative decoding keeps across its replies, in one object made once per
conversation (and so once per server model: the server keeps one conversation a model).

Each reply gets a new decoder (loop.py) and new drafters (their acceptance estimates start from
their priors every reply, as they always have, but for the history's); what outlives a reply lives
here, never on the engine, the store or in module globals:
  * the cost curve replies start from (cost.CurveMemory: loaded once, kept as replies learn it),
  * the soft rule's per-model tables (token embeddings, protected tokens), per set of options,
  * the document store's n-gram index (REST), made on first use for the store in use,
  * SENSE's buffers: the key states of the committed positions, which the loop hands over
    (`Drafter.add_keys`), and the live context store searched with them,
  * the recycle table (drafters/recycle.py): the target's likeliest next tokens after each token,
    started from the one the reply history keeps (and kept there again after a reply that taught it),
  * the reply history (reply_history.py): the model's earlier replies to this user, which SENSE
    searches as a third source; every finished reply is handed to it (`remember`). How well its
    drafts are accepted is learned over the conversation's replies (`history_estimates`).
"""
from __future__ import annotations

import numpy as np

from ..datastore.ngram_index import NgramIndex
from ..key_cache import KeyStateCache
from .context_store import ContextStore
from .cost import CurveMemory
from .drafters.base import Drafter
from .drafters.pasted_code import PastedCode
from .drafters.prediction import PredictionDrafter
from .drafters.recycle import RecycleTable
from .drafters.rest import new_estimate as rest_estimate
from .drafters.sense import new_estimate as sense_estimate
from .verify import SoftOptions, SoftVerifier


class Speculator:
    def __init__(self, engine, store=None, *, remember_cost: bool = True):
        """`store`: the open DocumentStore drafts may retrieve from (None: none). `remember_cost`:
        keep what replies learn of the cost curve on disk for later runs (a conversation does; a
        one-off decoder, make_decoder without a speculator, does not)."""
        self.engine = engine  # the target: its vocabulary and shape for drafters, its file for the tables
        self.store = store
        self.cost = CurveMemory(engine, remember=remember_cost)
        self.history = None  # a ReplyHistory (reply_history.py), or None: no history kept or searched
        self.drafter: Drafter | None = None  # the latest reply's
        self._soft: dict[SoftOptions, SoftVerifier] = {}
        self._ngram_index: NgramIndex | None = None  # of `store`, made on first use
        self._keys: KeyStateCache | None = None
        self._context: ContextStore | None = None
        self._history_estimates: tuple | None = None  # SENSE's neighbours', its n-gram recall's
        self._recycle: RecycleTable | None = None
        self._recycle_kept = 0  # the table's rows when the history last kept it

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
            drafter = PredictionDrafter(predicted, fallback=drafter, vocab=self.engine)
        elif drafter is not None:  # a pasted code block: an implicit prediction, whichever method drafts
            drafter = PastedCode(drafter, vocab=self.engine)
        self.drafter = drafter
        return drafter

    def usable_history(self):
        """The history SENSE may search: None without one, or while the engine reads its key states at
        another layer than the history's (a document store keyed elsewhere is in use)."""
        h = self.history
        return h if h is not None and h.key_layer == self.engine.key_layer else None

    def history_estimates(self) -> tuple:
        """(SENSE's estimate for the history's neighbours, its n-gram recall's): acceptance of
        history drafts learned over this conversation's replies, not restarted every reply."""
        if self._history_estimates is None:
            self._history_estimates = (sense_estimate(), rest_estimate())
        return self._history_estimates

    def remember(self, prompt_len: int, reply: list[int]) -> None:
        """Keep a finished reply (its tokens, which followed `prompt_len` prompt tokens) in the
        history, with its positions' key states when this reply computed them."""
        if self.history is None or len(reply) < 2:
            return
        keys = None
        if self._keys is not None and self.history.key_layer == self.engine.key_layer:
            rows = self._keys.upto(prompt_len + len(reply) - 1)  # row p chose the token at p + 1
            keys = None if rows is None else rows[prompt_len:]
        self.history.append(reply, None if keys is None else np.asarray(keys))
        if self._recycle is not None and self._recycle.rows != self._recycle_kept:
            self.history.keep_table(self._recycle.state())
            self._recycle_kept = self._recycle.rows

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

    def recycle_table(self) -> RecycleTable:
        """The target's recycled candidates (Token Recycling), kept over the conversation's replies;
        the first time, the one the reply history kept, where it has one of this vocabulary's shape."""
        if self._recycle is None:
            kept = self.history.table_state if self.history is not None else None
            try:
                table = RecycleTable.from_state(self.engine.n_vocab, kept) if kept else None
            except ValueError:  # another version's layout: a new table is kept over it
                table = None
            self._recycle = table or RecycleTable(self.engine.n_vocab)
            self._recycle_kept = self._recycle.rows
        return self._recycle

    def context_store(self) -> ContextStore:
        """SENSE's live context store (reset every reply)."""
        if self._context is None:
            self._context = ContextStore(self.engine.n_embd, self.engine.n_ctx)
        return self._context
