"""Constrained decoding: a GBNF grammar (response_format's JSON schema, schema_grammar.py) through
llama.cpp's own grammar sampler, and the acceptance rules under it.

Terms. The *committed* state has read every emitted token; verification walks a *clone* of it along
the draft, so row i of a verified draft is masked by the state after draft tokens 0..i-1, and a
draft token the state forbids is rejected. Only emitted tokens (accepted and next tokens) ever
reach the committed state (the loop's `_observe`).

A *mask* sets every token the state forbids to -inf (llama_sampler_apply on all n_vocab entries,
the costly part). Greedy decoding masks a row only when the row's own top token is forbidden (one
token checked; llama.cpp's common sampler does the same), and then first tries the row's 64
likeliest tokens; sampling masks every row it verifies.
Control tokens that are not end-of-generation (their text is never shown) are always forbidden;
end-of-generation tokens are allowed exactly when the grammar is complete.
"""
from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from ..errors import SenseError
from .types import Verdict
from .verify import AcceptanceRule, distribution, sample_from

SHORTLIST = 64  # greedy: candidates tried before a full mask (see GrammarState.top)
_TOKEN = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


def _array(buf: np.ndarray) -> llama_cpp.llama_token_data_array:
    return llama_cpp.llama_token_data_array(
        data=buf.ctypes.data_as(llama_cpp.llama_token_data_p), size=len(buf), selected=-1, sorted=False)


class _SamplerOwner:
    """Frees its llama.cpp sampler (`_sampler`) once, on close or when collected."""

    def close(self) -> None:
        if getattr(self, "_sampler", None):
            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class Grammar(_SamplerOwner):
    """A compiled grammar for one engine, in its start state; `start()` gives a state to advance."""

    def __init__(self, engine, gbnf: str, root: str = "root"):
        self._sampler = llama_cpp.llama_sampler_init_grammar(engine._vocab, gbnf.encode(), root.encode())
        if not self._sampler:
            raise SenseError("the grammar could not be parsed by llama.cpp (see its log above)")
        special = np.flatnonzero(engine.special_mask)  # [s] control and end-of-generation tokens
        eog = np.array([bool(llama_cpp.llama_vocab_is_eog(engine._vocab, int(t))) for t in special], bool)
        self.forbidden = np.zeros(engine.n_vocab, bool)  # [V] never allowed under a grammar
        self.forbidden[special[~eog]] = True
        self.eos = int(engine.eos_id)
        self.n_vocab = engine.n_vocab
        self.masks = 0  # full-row masks made (the costly operation), for the figures
        # candidate buffers shared by this grammar's states (one reply decodes on one thread)
        self._one = np.zeros(1, _TOKEN)  # [1] a single candidate
        self._one_array = _array(self._one)
        self._all = np.zeros(self.n_vocab, _TOKEN)  # [V] every candidate, for a full mask
        self._all_array = _array(self._all)
        self._ids = np.arange(self.n_vocab, dtype=np.int32)  # [V]
        self._few = np.zeros(SHORTLIST, _TOKEN)  # [SHORTLIST] a row's likeliest candidates
        self._few_array = _array(self._few)

    def start(self) -> "GrammarState":
        return GrammarState(self, llama_cpp.llama_sampler_clone(self._sampler))



class GrammarState(_SamplerOwner):
    """Where the output stands in the grammar (one llama.cpp grammar sampler)."""

    def __init__(self, grammar: Grammar, sampler):
        self.grammar = grammar
        self._sampler = sampler

    def clone(self) -> "GrammarState":
        return GrammarState(self.grammar, llama_cpp.llama_sampler_clone(self._sampler))

    def allows(self, token: int) -> bool:
        """Whether the grammar takes `token` next (one candidate checked: cheap)."""
        g = self.grammar
        if g.forbidden[token]:
            return False
        g._one[0] = (token, 0.0, 0.0)
        g._one_array.size, g._one_array.selected, g._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(g._one_array))
        return bool(np.isfinite(g._one["logit"][0]))

    def mask(self, row: np.ndarray) -> np.ndarray:
        """[V] a copy of logits `row` with every token the grammar forbids at -inf."""
        g = self.grammar
        g._all["id"], g._all["logit"] = g._ids, row
        g._all_array.size, g._all_array.selected, g._all_array.sorted = g.n_vocab, -1, False
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(g._all_array))  # sets forbidden logits to -inf
        g.masks += 1
        out = g._all["logit"].copy()
        out[g.forbidden] = -np.inf
        if not np.isfinite(out).any():  # nothing allowed at all: end the reply rather than write garbage
            out[g.eos] = 0.0
        return out

    def top(self, row: np.ndarray) -> int:
        """The greedy token under the grammar: the row's own top token when allowed, else the best
        allowed of the row's SHORTLIST likeliest tokens (exact: every other token scores lower),
        else the top of the fully masked row."""
        best = int(np.argmax(row))
        if self.allows(best):
            return best
        g = self.grammar
        ids = np.argpartition(row, -SHORTLIST)[-SHORTLIST:].astype(np.int32)  # [SHORTLIST]
        g._few["id"], g._few["logit"] = ids, row[ids]
        g._few_array.size, g._few_array.selected, g._few_array.sorted = SHORTLIST, -1, False
        llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(g._few_array))
        logit = np.where(g.forbidden[ids], -np.inf, g._few["logit"])
        if np.isfinite(logit).any():
            return int(ids[logit == logit.max()].min())  # ties as np.argmax breaks them: the lowest id
        return int(np.argmax(self.mask(row)))

    def accept(self, token: int) -> None:
        """Advance over an allowed token (llama.cpp aborts on one the grammar forbids)."""
        llama_cpp.llama_sampler_accept(self._sampler, int(token))



def verify_constrained(logits: np.ndarray, draft: np.ndarray, rule: AcceptanceRule, state: GrammarState,
                       rng: np.random.Generator) -> Verdict:
    """The greedy or sampling rule (verify.py) on a chain draft under a grammar. logits: [k+1, V];
    draft: [k]; `state`: the committed state (not advanced: draft tokens are walked on a clone).

    Greedy: accept d_i while it is the top token of row i masked by the state after d_0..d_(i-1).
    Sampling: speculative sampling against p_i = the masked row's (truncated) distribution, so a
    forbidden d_i (p_i(d_i) = 0) is always rejected and the recovered token is always allowed.
    Soft acceptance is never used under a grammar: the exact rule decides.
    """
    walk = state.clone() if len(draft) else state
    try:
        for i, x in enumerate(draft.tolist()):
            if rule.temperature > 0:
                p = distribution(walk.mask(logits[i]), rule.temperature, rule.truncation)
                if rng.random() < p[x]:
                    walk.accept(x)
                    continue
                p[x] = 0.0
                return Verdict(accepted=i, next_token=sample_from(p, rng))
            top = walk.top(logits[i])
            if x != top:
                return Verdict(accepted=i, next_token=top)
            walk.accept(x)
        row = logits[len(draft)]
        if rule.temperature > 0:
            return Verdict(len(draft), sample_from(distribution(walk.mask(row), rule.temperature, rule.truncation), rng))
        return Verdict(len(draft), walk.top(row))
    finally:
        if walk is not state:
            walk.close()
