"""SENSE drafter: Semantic Embedding Navigation.

The query is the target's key state at the last evaluated position (a block's normalized input, or
the final hidden state: engine.py): the state that just chose the newest token `t`, computed by the
verification decode and handed over by the loop (`add_keys`; no extra forward pass, and the drafter
never reads the engine). Its nearest neighbours among stored key states come from
  * the live context store: every committed position of this conversation (prompt included), and
  * the document store: every position of the user's indexed documents (when one is loaded),
  * the reply history: every position of the model's earlier replies to this user (reply_history.py).
A neighbour whose own next token agrees with `t` proposes the tokens that followed it. Each
source's proposals are merged into a token trie weighted by similarity; its heaviest path is that
source's draft (or, with tree=True, the trie's most probable nodes, verified in one decode). The
draft with more expected accepted tokens goes, and the loop's cost policy decides how much of it to
verify from the learned acceptance of similar drafts (estimates are kept per source: documents
that never match the answer must not talk down the live context).
Per step: at most two k-NN searches and array work on at most 2k continuations; a source whose searches
bear no fruit pauses (Backoff), and the documents are not searched while the live context is a copy.

With `lexical` (a prompt-lookup drafter over the same context), SENSE subsumes exact n-gram
matching: the positions an n-gram match finds are key-state neighbours too, but a k-NN search
may rank them below near-duplicates that agree on fewer tokens, and paused searches miss them. So the
lexical draft competes with the neighbours' drafts on the same scale (expected accepted tokens) and
the likelier one goes; while the lexical match is a copy under way (8 tokens or more in a row,
COPY_MATCH_BUCKET) no search is run at all. With `recall` (an exact n-gram match in the reply
history's tokens, RestDrafter over reply_history.ReplyHistory.lookup: SuffixDecoding's idea), a third
draft competes the same way: a phrase the model wrote before in another conversation.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ...key_cache import KeyStateCache
from ..context_store import ContextStore
from ..rewrap import JoinedPrompt
from ..types import CommittedKeys, Draft, Feedback, RowCandidates
from .backoff import Backoff
from .base import AcceptanceEstimate, Drafter
from .recycle import CANDIDATE_RATE, TOP_K, Graft, GrowthCap, RecycleTable, base_feedback, recycled_tree
from .trie import best_first_tree, continuations, heaviest_path

SIM_BUCKETS = (0.9, 0.98)  # similarity of the best agreeing neighbour: < 0.9 | 0.9-0.98 | >= 0.98
LEXICAL = 32  # how many tokens before a neighbour are compared with the query's
LEX_BUCKETS = (2, 4, 8, 16)  # tokens agreeing right before the best neighbour: 0-1 | 2-3 | 4-7 | 8-15 | 16+
RUN_BUCKETS = (1, 4, 12)  # draft tokens accepted in a row (`update`): 0 | 1-3 | 4-11 | 12+ (a copy under way)
# Priors: a prototype on this model found the top neighbour's next token right ~65% of the time
# (~76% at cosine >= 0.9); a neighbour whose preceding tokens also match is an n-gram match on top,
# and a copy under way (a long lexical match, a run of accepted drafts) tends to go on. Observed
# acceptance per key takes over after a few steps.
LEX_PRIOR = (0.0, 0.12, 0.24, 0.34, 0.42)
SOURCES = ("context", "docs", "history")  # estimates are kept per source: one source's misses say nothing of another's
PRIORS = {
    (src, s, x, r): min(0.95, 0.25 + 0.15 * s + LEX_PRIOR[x] + (0.0, 0.1, 0.2, 0.25)[r])
    for src in range(len(SOURCES)) for s in range(len(SIM_BUCKETS) + 1)
    for x in range(len(LEX_BUCKETS) + 1) for r in range(len(RUN_BUCKETS) + 1)
}
HISTORY = SOURCES.index("history")


def new_estimate() -> AcceptanceEstimate:
    """SENSE's acceptance estimates: keys (source, similarity, lexical agreement, run), pooled by (source, lexical agreement)."""
    return AcceptanceEstimate(PRIORS, pool=lambda key: (key[0], key[2]), split_first=True)


MAX_PAUSE = {"context": 16, "docs": 32, "history": 32}  # steps; a pause doubles from 2 while pauses end with no fruit
COPYING = 4  # a context neighbour this many tokens in lexical agreement: a copy under way, no store searched
HINT_N = 3  # a context search runs despite a pause when the last HINT_N tokens occurred before
SHARPNESS = 0.05  # weight = exp((similarity - 1) / SHARPNESS): near-duplicates dominate the vote
COPY_MATCH_BUCKET = 4  # the lexical drafter's match bucket from which a copy is under way (8+ tokens)
# A reply that copies little draws little from its live context and documents: while the lexical drafter
# says so (pld.PromptLookupDrafter.copying_little: under COPY_RATE of the reply came in a copy), their
# drafts are cut to FEW_TOKENS, and where verification is not cheap (a CPU: Drafter.cheap_verification)
# they are not searched at all. Their keys do not tell the two apart: on the 1.5B's quick suite, drafts
# keyed (sim < 0.9, 2-3 tokens lexical, run 1-3) kept 45 of 75 tokens on the copy kinds and 0 of 40 on
# the chat kinds, ~15 tokens each where c(16) is 5.7. The cut, replayed (1.5B, this EPYC's curve): quick
# chat 0.98x -> 1.01x, math 0.96x -> 0.98x, summary 0.96x -> 1.00x, open 0.99x -> 1.00x, docqa-rag 1.35x
# -> 1.33x; full suite (held out) open 1.01x -> 1.02x, grounded 1.61x -> 1.60x. Cut so, none ever went on
# a CPU's curve: with no search there every modeled figure of both models' quick suites and the 1.5B's
# returning user is the same, and ~0.13 ms a token is saved (2% of the 135M's decode). The reply history
# is searched still, its drafts whole (its estimates learn across replies).
FEW_TOKENS = 2


def _agreement(stream: np.ndarray, positions: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """[m] how many tokens at and before each position equal `recent` (newest first), in a row."""
    idx = positions[:, None] - np.arange(len(recent))[None, :]  # [m, LEXICAL]
    same = (idx >= 0) & (stream[np.maximum(idx, 0)] == recent[None, :])
    return np.cumprod(same, axis=1).sum(axis=1)


class SenseDrafter(Drafter):
    """`model`: the target's vocabulary (rewrap's tokenizing) and shape (n_embd, n_ctx, key_layer),
    never its state. `keys` and `context`: buffers lent by the speculator (speculator.py), which
    keeps them across replies; made here when not given."""

    needs_keys = True

    def __init__(self, model, *, use_context: bool = True, docs=None, k: int = 8, max_len: int = 32,
                 tree: bool = False, max_branches: int = 4, rewrap: bool = True, name: str = "sense",
                 lexical: Drafter | None = None, keys: KeyStateCache | None = None,
                 context: ContextStore | None = None, history=None, recall: Drafter | None = None,
                 history_estimate: AcceptanceEstimate | None = None,
                 recycle: Callable[[], RecycleTable] | None = None):
        if not use_context and docs is None:
            raise ValueError("SENSE needs the live context, a document store, or both")
        self.stores = {name: store for name, store in (("docs", docs), ("history", history)) if store is not None}
        for store in self.stores.values():
            store.require_key_layer(model.key_layer)  # its keys and our queries come from one layer
        self.vocab = model
        self.name = name
        self.use_context = use_context
        self.k = k
        self.max_len = max_len
        self.tree = tree  # propose token trees (several branches verified at once) instead of chains
        self.max_branches = max_branches
        self.backoff = {src: Backoff(MAX_PAUSE[src]) for src in SOURCES}
        self._searched: list[str] = []  # the sources searched for the latest proposal
        self.rewrap = rewrap  # prompt neighbours continue through line wraps (see rewrap.JoinedPrompt)
        self._joined: JoinedPrompt | None = None
        if use_context and context is None:
            context = ContextStore(model.n_embd, model.n_ctx)
        self.context = context if use_context else None
        self.keys = keys if keys is not None else KeyStateCache(model.n_embd, model.n_ctx)  # of each committed position
        self.ctx: list[int] = []
        self._ctx_array = np.zeros(model.n_ctx + 64, np.int32)  # [capacity] self.ctx, kept in step
        self._seen: set[tuple[int, ...]] = set()  # HINT_N-grams of the context before its last token
        self._added = 0  # positions [0, _added) are in the context store
        self._run = 0  # draft tokens accepted in a row
        self.estimate = new_estimate()
        # the history's drafts learn across replies (one reply is too short to learn which of a whole
        # history's neighbours pay): an estimate lent by the speculator, else this reply's
        self.history_estimate = history_estimate if history_estimate is not None else self.estimate
        self.lexical = lexical  # exact n-gram drafts over the same context (None: neighbours only)
        self.recall = recall  # exact n-gram drafts over the reply history's tokens (None: none)
        self._competitors = [d for d in (lexical, recall) if d is not None]  # drafters whose drafts compete with ours
        self.copy_match_bucket = COPY_MATCH_BUCKET
        self._rivals: list[Draft] = []  # the latest proposal's losing drafts: scored on the next token
        # the target's recycled candidates (recycle.py; the table made on first use), trees only
        self.recycle = recycle if tree else None
        self.cap = GrowthCap()
        self.candidates = TOP_K if self.recycle is not None else 0
        self.candidate_rate = CANDIDATE_RATE
        self._handed = False  # the loop hands this reply's rows over: only then are they recycled
        self._cheap = False  # verification is cheap (the loop says so each reply)

    def begin(self, prompt: Sequence[int]) -> None:
        for d in self._competitors:
            d.begin(prompt)
        self.ctx = []
        self._seen = set()
        self._extend_own(prompt)  # the lexical drafter has the prompt already (its begin)
        self._reply_start = len(self.ctx)  # lexical agreement stops here: every reply's header is the same
        self._added = 0
        self._run = 0
        for b in self.backoff.values():
            b.reset()
        self._searched = []
        self._rivals = []
        self._handed = False
        self._joined = JoinedPrompt(self.vocab, prompt) if self.rewrap and self.context is not None else None
        if self._joined is not None:
            j = self._joined.tokens.tolist()
            self._seen.update(tuple(j[i : i + HINT_N]) for i in range(len(j) - HINT_N + 1))
        if self.context is not None:
            self.context.reset()
        self.keys.truncate(0)  # the prompt's come next (add_keys)

    def cheap_verification(self, cheap: bool) -> None:
        self._cheap = cheap
        for d in self._competitors:
            d.cheap_verification(cheap)

    def add_candidates(self, candidates: RowCandidates) -> None:
        if self.recycle is not None:
            self.recycle().add(candidates)
            self._handed = True

    def add_keys(self, keys: CommittedKeys) -> None:
        if keys.start <= self.keys.valid:  # rows after a gap are not kept (nor then searched), as by the engine
            self.keys.write(keys.start, keys.rows)

    def extend(self, tokens: Sequence[int]) -> None:
        if self._rivals and len(tokens):
            self._score_rivals(int(tokens[0]))
        for d in self._competitors:
            d.extend(tokens)
        self._extend_own(tokens)

    def _score_rivals(self, token: int) -> None:
        """The drafts that lost the latest competition learn from the token that came next, as the
        loop scores a proposal it chose not to verify. Without this, a drafter that loses keeps its
        stale estimate: prompt lookup on its own learns from every step, but inside SENSE it learned
        only from the steps its draft went, so it drafted later into a copy than it does alone (on
        code-textwrap.dedent a 2-token match stayed at its 0.45 prior where on its own it had
        risen to 0.59 and drafted)."""
        rivals, self._rivals = self._rivals, []
        for rival in rivals:
            hit = int(rival.tokens[0] == token)
            if rival.source in SOURCES:
                self._estimate(rival.key).observe(rival.key, 1, hit)
            else:
                self._owner(rival).update(Feedback(Draft(rival.tokens[:1], rival.source, rival.acceptance, rival.key), hit))

    def _owner(self, draft: Draft) -> Drafter:
        """The competing drafter a draft not of ours came from."""
        return self.recall if self.recall is not None and draft.source == self.recall.source else self.lexical

    def _extend_own(self, tokens: Sequence[int]) -> None:
        ctx, seen = self.ctx, self._seen
        if len(ctx) + len(tokens) > len(self._ctx_array):
            self._ctx_array = np.concatenate([self._ctx_array, np.zeros(len(self._ctx_array) + len(tokens), np.int32)])
        array = self._ctx_array
        for t in tokens:
            if len(ctx) >= HINT_N:
                seen.add(tuple(ctx[-HINT_N:]))
            array[len(ctx)] = t
            ctx.append(int(t))

    def _repeating(self) -> bool:
        """Whether the context's last HINT_N tokens occurred before: a repeat may be starting,
        which the live context can continue (a cheap set lookup, so paused searches need not miss it)."""
        return tuple(self.ctx[-HINT_N:]) in self._seen

    def _query(self) -> tuple[int, np.ndarray] | None:
        """(position, key state) of the last evaluated position, adding older ones to the store."""
        q = len(self.ctx) - 2  # the position whose key state chose ctx[q + 1], the newest token
        keys = self.keys.upto(q + 1) if q >= 0 else None
        if keys is None:
            return None  # a position without its key state (evaluated without keys): nothing to query
        if self.context is not None and self._added < q:
            self.context.add(np.arange(self._added, q), keys[self._added : q])
            self._added = q
        return q, keys[q]

    def _proposals(self, query: np.ndarray, newest: int, search_context: bool, search_stores: list[str]):
        """Continuations [m, L] after neighbours that agree with `newest`, with their similarity [m],
        lexical agreement [m] (tokens right before them equal to the context's) and source [m]
        (an index into SOURCES)."""
        L = self.max_len
        ctx = self._ctx_array[: len(self.ctx)]  # [n] the context (a view: no per-step list copy)
        recent = ctx[max(self._reply_start, len(ctx) - 1 - LEXICAL) : len(ctx) - 1][::-1]  # the reply's, newest first
        conts, sims, lex, srcs = [], [], [], []
        if search_context and len(self.context):
            self._searched.append("context")
            keys, sim = self.context.search(query, self.k)
            nxt = keys + 1  # the token each neighbour chose
            follow = continuations(ctx, nxt + 1, L)  # [m, L]
            agree = ctx[nxt] == newest
            joined = self._joined
            if joined is not None and len(joined.tokens):  # prompt neighbours: the joined text first
                j = joined.aligned(nxt)  # [m]
                use = (j >= 0) & (joined.tokens[np.maximum(j, 0)] == newest)
                if use.any():
                    follow = np.where(use[:, None], continuations(joined.tokens, j + 1, L), follow)
                    agree |= use
            keys, sim = keys[agree], sim[agree]
            if len(keys):
                conts.append(follow[agree])
                sims.append(sim)
                lex.append(_agreement(ctx, keys, recent))
                srcs.append(np.zeros(len(keys), np.int8))
        copying = bool(lex) and int(lex[0].max()) >= COPYING  # the conversation already has what follows
        for name in search_stores if not copying else ():
            store = self.stores[name]
            self._searched.append(name)
            found = store.search(query[None, :], self.k, continuation=L + 1)
            if found is None:  # the history's writer is busy: nothing this step
                continue
            agree = found.continuations[0, :, 0] == newest
            if agree.any():
                pos = found.positions[0, agree]
                conts.append(found.continuations[0, agree, 1:])
                sims.append(found.similarity[0, agree])
                lex.append(_agreement(store.token_array, pos, recent))
                srcs.append(np.full(len(pos), SOURCES.index(name), np.int8))
        if not conts:
            return None
        return np.concatenate(conts), np.concatenate(sims), np.concatenate(lex), np.concatenate(srcs)

    def _fruit(self, accepted_from: str | None) -> None:
        """Tell each source searched for the latest proposal whether it bore fruit: its own draft
        with a token accepted."""
        for src in self._searched:
            self.backoff[src].result(src == accepted_from)
        self._searched = []

    def propose(self, max_len: int) -> Draft | None:
        if self._searched:  # the last proposal got no feedback (not verified, not scored)
            self._fruit(None)
        self._rivals = []
        limit = min(max_len, self.max_len)
        lexical = self.lexical.propose(max_len) if self.lexical is not None else None
        if lexical is not None and lexical.key >= self.copy_match_bucket:
            return lexical  # a copy under way: the n-gram match already knows what follows, as far as the loop allows
        if lexical is not None and len(lexical.tokens) > limit:  # else as long as the neighbours' drafts
            lexical = lexical.first(limit)
        recalled = self.recall.propose(limit) if self.recall is not None else None
        drafts = [d for d in (self._propose_neighbours(max_len), lexical, recalled) if d is not None]
        drafts.sort(key=_value, reverse=True)  # stable: on a tie the neighbours' draft, then the live context's
        self._rivals = drafts[1:]
        best = drafts[0] if drafts else None
        if self._handed and self.ctx:  # the target's own candidates beside it and after it
            before = self.ctx[-2] if len(self.ctx) > 1 else -1
            tree = recycled_tree(self.recycle(), self.ctx[-1], min(max_len, self.cap.nodes), base=best, previous=before)
            return self.cap.tree(tree)
        return best

    def _propose_neighbours(self, max_len: int) -> Draft | None:
        little = self._copying_little() and not self._cheap  # the context and documents are not searched (above)
        search_context = self.context is not None and not little and (self.backoff["context"].due() or self._repeating())
        search_stores = [name for name, store in self.stores.items()
                         if store.n_vectors > 0 and (name == "history" or not little) and self.backoff[name].due()]
        if not (search_context or search_stores):
            return None  # every source paused: no query at all (the context store catches up later)
        found = self._query()
        if found is None:
            return None
        _, query = found
        proposals = self._proposals(query, self.ctx[-1], search_context, search_stores)
        if proposals is None:
            self._fruit(None)
            return None
        conts, sims, lex, srcs = proposals
        weights = np.exp((sims - 1.0) / SHARPNESS) * (1.0 + lex)
        limit = min(max_len, self.max_len)
        best, best_value = None, 0.0
        for src in sorted(set(srcs.tolist())):  # each source drafts on its own (np.unique imports numpy.ma: 23 ms)
            rows = srcs == src
            draft = self._draft(conts[rows], weights[rows], sims[rows], lex[rows], src, limit)
            if draft is None:
                continue
            value = _value(draft)
            if best is None or value > best_value:
                best, best_value = draft, value
        if best is None:
            self._fruit(None)
        return best

    def _draft(self, conts, weights, sims, lex, src: int, limit: int) -> Draft | None:
        """One source's draft: the heaviest path of its continuations' trie (or its tree)."""
        if self.tree:  # one trie walk (the tree's): the key comes from the heaviest neighbour
            if not (conts[:, 0] >= 0).any():
                return None
            best = int(np.argmax(weights))
        else:
            tokens, _, members = heaviest_path(conts, weights, limit)
            if len(tokens) == 0:
                return None
            on = members if members.any() else np.ones(len(sims), bool)
            best = int(np.argmax(np.where(on, weights, -1.0)))
        key = (
            src,
            int(np.searchsorted(SIM_BUCKETS, sims[best])),
            int(np.searchsorted(LEX_BUCKETS, lex[best], side="right")),
            int(np.searchsorted(RUN_BUCKETS, self._run, side="right")),
        )
        acceptance = self._estimate(key).get(key)
        if src != HISTORY and self._copying_little():  # verification is cheap, else not searched (above)
            limit = min(limit, FEW_TOKENS)
            if not self.tree:
                tokens = tokens[:FEW_TOKENS]
        if not self.tree:
            return Draft(tokens=tokens, source=SOURCES[src], acceptance=acceptance, key=key,
                         path_probs=self._estimate(key).chain(key, len(tokens)), geometric=True)
        nodes, parents, path_probs = best_first_tree(conts, weights, acceptance, limit, self.max_branches)
        if len(nodes) == 0:
            return None
        draft = Draft(nodes, SOURCES[src], acceptance, key, parents, path_probs)
        return draft.first(len(nodes))  # a tree with a single path is a chain

    def _copying_little(self) -> bool:  # the reply so far came little in a copy (never without a lexical drafter)
        return self.lexical is not None and self.lexical.copying_little

    def _estimate(self, key) -> AcceptanceEstimate:
        return self.history_estimate if key[0] == HISTORY else self.estimate

    def update(self, feedback: Feedback) -> None:
        if isinstance(feedback.draft.key, Graft):  # the recycled nodes learn from the rows (add_candidates)
            self.cap.verified(feedback)
            feedback = base_feedback(feedback)
            if feedback is None:
                return
        drafted = feedback.drafted
        if feedback.draft.source in SOURCES:
            self._estimate(feedback.draft.key).observe(feedback.draft.key, drafted, feedback.accepted)
            self._fruit(feedback.draft.source if feedback.accepted > 0 else None)
        else:  # a competing drafter's draft went
            self._owner(feedback.draft).update(feedback)
        # prompt lookup's shadow (not verified: no next token) that came true is no run of ours (counted, a restated
        # question went at 0.84, not its own 0.64: docqa-rag-break, 1.5B); a miss ends the run all the same
        lexical_shadow = feedback.next_token < 0 and feedback.draft.source == getattr(self.lexical, "name", None)
        self._run = 0 if feedback.accepted < drafted else self._run + (0 if lexical_shadow else feedback.accepted)


def _value(draft: Draft) -> float:
    """Expected accepted tokens of a draft (a chain: sum of a^i; a tree: its nodes' path probabilities)."""
    if draft.path_probs is not None:
        return float(draft.path_probs.sum())
    return float((draft.acceptance ** np.arange(1, len(draft.tokens) + 1)).sum())
