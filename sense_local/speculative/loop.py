"""The speculative loop: draft -> one batched target decode of [last token + draft] -> verify -> commit
the accepted prefix, truncate the rest -> emit events. A tree draft is decoded in one batch too.

With no drafter (or when the cost policy says a draft would not pay) a step is a plain one-token
decode, so `ar` is this same loop with drafting switched off. Under the soft rule the proposal's
token at the row after the verified part (the bonus row, computed anyway) is judged too (`_bonus`).

Under a grammar (grammar.py) every row is judged as masked by the grammar state after the tokens before
it, drafts are chains (a tree's main path) and the exact rule decides; the committed state advances over
emitted tokens only. Presence and frequency penalties (penalties.py) apply row by row, as if the draft
tokens before a row had been emitted. Log-probabilities (logprobs.py): off the row of each emitted token.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..detokenize import StreamDetokenizer
from ..engine import Engine
from ..errors import Cancelled
from .cost import CostCurve, CurveMemory, OnlineCost
from .drafters.base import Drafter
from .grammar import Grammar, GrammarState, verify_constrained
from .logprobs import TokenLogprob, token_logprob
from .penalties import Penalties, PenaltyState
from .top_tokens import top_tokens
from .types import TARGET, CommittedKeys, Draft, Feedback, GenerationStats, RowCandidates, TokenEvent, Verdict
from .verify import AcceptanceRule, top2_gap

# the longest draft: 64 rows with the token before it, the curve's longest (cost.py: a copy pays for long decodes)
MAX_DRAFT = 63
# Where a decode of 16 rows costs under FILLED one-token decodes (a GPU, --free-verification), the recycle
# table takes every row of a decode (a tree's rejected nodes: alternatives it learns), else only the rows
# that read a kept token: why, and what each measured, in drafters/recycle.py.
FILLED = 2.0


@dataclass
class _Step:
    """One draft-and-verify step."""
    proposal: Draft | None  # what the drafter proposed (None: it had nothing)
    draft: Draft | None  # the part of it verified (None: a plain one-token decode)
    verdict: Verdict
    logits: np.ndarray  # [1 + k, n_vocab] the rows judged (the decode's own view, or a penalized copy)
    raw: np.ndarray  # [1 + k, n_vocab] the decode's own rows (log-probabilities are read here)


class SpecDecoder:
    def __init__(
        self,
        engine: Engine,
        *,
        method: str = "ar",
        drafter: Drafter | None = None,
        rule: AcceptanceRule | None = None,
        cost: CostCurve | None = None,
        curve_memory: CurveMemory | None = None,
        seed: int = 0,
        record_gaps: bool = False,
        soft_bonus: bool = True,
        grammar: Grammar | None = None,
        penalties: Penalties | None = None,
        logprobs: int | None = None,
    ):
        if drafter is not None and cost is None:
            raise ValueError("a drafter needs a cost curve to decide when drafting pays")
        self.engine = engine
        self.method = method
        self.drafter = drafter
        self.rule = rule or AcceptanceRule()
        self.cost = OnlineCost(cost) if cost is not None else None  # refined by every decode's timing
        self.curve_memory = curve_memory  # told what this reply learned of the curve, at its end
        self.rng = np.random.default_rng(seed)
        self.record_gaps = record_gaps
        self._t_gaps = 0.0  # seconds spent recording top-2 gaps this reply: the bench's, left out of t_total
        self.soft_bonus = soft_bonus
        self.keyed = drafter is not None and drafter.needs_keys  # drafts keyed on the target's key states
        self.stats = GenerationStats(method=method)
        self._shadow: Draft | None = None  # a draft we chose not to verify: scored for free next step
        self._plain_step = False  # greedy, nothing penalized or constrained (per reply): a step without a draft is an argmax
        self._rows = 0  # rows of the latest verification decode (padding included): what its time bought
        self.grammar = grammar  # the output must match it (response_format)
        self._gstate: GrammarState | None = None  # the grammar after the emitted tokens, during generate()
        self.penalties = penalties if penalties is not None and penalties.active else None
        self._pstate: PenaltyState | None = None  # the reply's token counts, during generate()
        self.logprobs = logprobs  # None: none; n >= 0: each emitted token's log p and its row's n likeliest
        self._last_logprob: TokenLogprob | None = None  # of the token the next loop turn emits
        # trees only for greedy decoding whose rows depend on nothing but the tokens before them
        self.chains_only = grammar is not None or self.penalties is not None or logprobs is not None
        # each row's likeliest next tokens for a drafter that recycles them, where its first is what
        # the target emits there (greedy, unconstrained) and its likeliest drafts could pay
        self.candidates = (drafter.candidates if drafter is not None and drafter.candidates
                           and self.rule.temperature == 0 and not self.chains_only
                           and self.cost.best_length(drafter.candidate_rate, 1) > 0 else 0)
        # a decode of 16 rows under FILLED one-token decodes: the recycle table takes all its rows (else
        # those that read a kept token), and the drafter is told (a weak source's short drafts pay there)
        self.cheap = self.cost is not None and self.cost.curve.effective(16) < FILLED
        self.all_rows = self.candidates > 0 and self.cheap

    def generate(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        cancel: threading.Event | None = None,
        progress=None,
    ) -> Iterator[TokenEvent]:
        """Yield one TokenEvent per generated token. `self.stats` counts live and is complete when
        this returns or when the caller closes the generator early (a stop string, a disconnect).
        progress(done, total): called as a long prompt is read (with `cancel`; Engine.prefill)."""
        self.stats = GenerationStats(method=self.method, prompt_tokens=len(prompt))
        self._t_gaps = 0.0
        detok = StreamDetokenizer(self.engine.piece)
        t0 = time.perf_counter()
        self._gstate = self.grammar.start() if self.grammar is not None else None
        self._pstate = self.penalties.start() if self.penalties is not None else None
        self._plain_step = self.rule.temperature <= 0 and self._gstate is None and self._pstate is None
        try:
            last = self._prefill(prompt, cancel, progress)
        except Cancelled:
            self.stats.stop_reason = "cancelled"
            self.stats.t_prefill = time.perf_counter() - t0
            self._end_grammar()
            return
        self.stats.t_prefill = time.perf_counter() - t0
        try:
            with self.engine.cancellable(cancel):  # a draft's verification stops mid-decode too
                yield from self._decode(last, max_tokens, cancel, detok)
            tail = detok.flush()
            if tail:
                yield TokenEvent(-1, tail, TARGET)
        finally:
            self.stats.t_total = time.perf_counter() - t0 - self.stats.t_prefill - self._t_gaps
            self._end_grammar()
            if self.drafter is not None:
                self.drafter.report(self.stats)
            if self.cost is not None and self.curve_memory is not None:
                self.curve_memory.learned(self.cost)  # the next reply starts from what this one timed

    def _end_grammar(self) -> None:
        if self._gstate is not None:
            self._gstate.close()
            self._gstate = None

    def _decode(self, last: int, max_tokens: int, cancel, detok) -> Iterator[TokenEvent]:
        """Emit `last`, then step (draft -> verify -> accept) until a stop; every token goes out as
        an event the moment it is known."""
        eng, stats = self.engine, self.stats
        last_source = TARGET  # a draft source when `last` is a proposal's token soft-accepted at the bonus row
        step_emitted = 0  # tokens the latest forward contributed before `last`
        while True:
            if eng.is_eog(last):
                stats.stop_reason = "eos"
                if step_emitted == 0:
                    stats.forwards -= 1  # that forward only said "stop": it produced no token
                return
            stats.tokens += 1
            stats.soft_accepted += int(last_source != TARGET)
            yield TokenEvent(last, detok.push(last), last_source, last_source != TARGET, self._last_logprob)
            self._observe(last)
            stats.stop_reason = self._stop_reason(max_tokens, cancel)
            if stats.stop_reason:
                return
            try:
                step = self._step(last, max_tokens - stats.tokens)
            except Cancelled:  # the verification decode was stopped: nothing of it was committed
                stats.stop_reason = "cancelled"
                return
            step_emitted = 0
            for row, (tok, soft, source) in enumerate(self._accept(step)):
                if eng.is_eog(tok):
                    stats.stop_reason = "eos"
                    return
                stats.tokens += 1
                step_emitted += 1
                stats.accepted += 1  # counted as emitted, so events and stats agree
                self._emitted(tok)
                stats.soft_accepted += int(soft)
                yield TokenEvent(tok, detok.push(tok), source, soft, self._logprob(step.raw[row], tok), more=True)
                if stats.tokens >= max_tokens:
                    stats.stop_reason = "length"
                    return
            last, last_source = self._next_token(step)
            self._last_logprob = self._logprob(step.raw[step.verdict.accepted], last)

    def _prefill(self, prompt: Sequence[int], cancel=None, progress=None) -> int:
        """Evaluate the prompt; the target's first token (Cancelled once `cancel` is set)."""
        out = self.engine.prefill(prompt, outputs="last", with_keys=self.keyed, cancel=cancel, progress=progress)
        verdict = self._judge(out.logits[-1:], np.empty(0, np.int32))  # no reply yet: nothing to penalize
        self._last_logprob = self._logprob(out.logits[-1], verdict.next_token)
        if self.record_gaps:
            self.stats.top2_gaps.append(top2_gap(out.logits[-1]))
        self.stats.forwards = 1
        self.stats.cached_tokens = out.reused
        self._shadow = None
        if self.drafter is not None:
            self.drafter.cheap_verification(self.cheap)
            self.drafter.begin(prompt)
            self._hand_candidates(prompt[-1:], [prompt[-2] if len(prompt) > 1 else -1], out.logits[-1:])
        if self.keyed:  # the prompt's key states: evaluated now, or kept from an earlier prefill
            rows = self.engine.committed_keys(len(prompt))
            if rows is not None:
                self.drafter.add_keys(CommittedKeys(0, rows))
        return verdict.next_token

    def _emitted(self, token: int) -> None:
        """The grammar and the penalties' counts advance over an emitted token."""
        if self._gstate is not None:
            self._gstate.accept(token)
        if self._pstate is not None:
            self._pstate.accept(token)

    def _logprob(self, row: np.ndarray, token: int) -> TokenLogprob | None:
        return None if self.logprobs is None else token_logprob(row, token, self.logprobs)

    def _observe(self, token: int) -> None:
        """The grammar, the penalties and the drafter see an emitted target token; a shadow draft is
        scored against it."""
        self._emitted(token)
        if self.drafter is None:
            return
        self.drafter.extend((token,))
        shadow, self._shadow = self._shadow, None
        if shadow is not None:
            hit = int(shadow.tokens[0] == token)
            self.drafter.update(Feedback(shadow.first(1), hit, first_token=token))

    def _stop_reason(self, max_tokens: int, cancel) -> str:
        if self.stats.tokens >= max_tokens:
            return "length"
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if self.engine.n_past + 1 >= self.engine.n_ctx:
            return "context"
        return ""

    def _step(self, last: int, left: int) -> _Step:
        """Draft (if it pays), then one target decode of [last + draft] judged by the rule."""
        proposal, draft = self._draft(left)
        start = self.engine.n_past  # where `last` is committed
        tv = time.perf_counter()
        raw, logits, verdict, keys = self._verify(last, draft)
        dt = time.perf_counter() - tv
        if self.record_gaps and draft is None:  # the bench's measuring: outside the decode's time and t_total
            self.stats.top2_gaps.append(top2_gap(raw[0]))
            self._t_gaps += time.perf_counter() - tv - dt
        self.stats.t_verify += dt
        self.stats.forwards += 1
        if self.cost is not None:
            self.cost.observe(self._rows, dt)
        if self.keyed:
            self.drafter.add_keys(CommittedKeys(start, keys))
        if self.candidates:
            before = self.engine.tokens[start - 1] if start > 0 else -1
            if draft is None:
                self._hand_candidates([last], [before], raw)
            else:
                tokens = np.concatenate(([last], draft.tokens))
                parents = np.arange(-1, len(draft.tokens) - 1) if draft.parents is None else draft.parents
                previous = np.concatenate(([before], tokens[parents + 1]))
                kept = (slice(None) if self.all_rows  # else `last` and the accepted draft tokens (views for a chain)
                        else slice(verdict.accepted + 1) if verdict.path is None
                        else np.concatenate(([0], np.asarray(verdict.path, np.int64) + 1)))
                self._hand_candidates(tokens[kept], previous[kept], raw[kept])
        return _Step(proposal, draft, verdict, logits, raw)

    def _hand_candidates(self, tokens, previous, rows: np.ndarray) -> None:
        """Each kept row's likeliest next tokens to a drafter that recycles them: tokens [m] the
        tokens the rows read, previous [m] the tokens before those, rows [m, V] their logits."""
        if self.candidates:
            t0 = time.perf_counter()
            top = top_tokens(rows, self.candidates)
            self.drafter.add_candidates(RowCandidates(np.asarray(tokens, np.int32), np.asarray(previous, np.int32),
                                                      top, np.take_along_axis(rows, top, 1)))
            self.stats.t_draft += time.perf_counter() - t0  # drafting's work, though after the decode

    def _draft(self, left: int) -> tuple[Draft | None, Draft | None]:
        """(what the drafter proposed, the part of it worth verifying); a proposal not worth
        verifying is kept as the shadow, to be scored against the next token for free."""
        if self.drafter is None:
            return None, None
        td, draft = time.perf_counter(), None
        room = min(MAX_DRAFT, left, self.engine.n_ctx - self.engine.n_past - 2)
        proposal = self.drafter.propose(room) if room > 0 else None
        if proposal is not None:
            if proposal.parents is not None and (self.rule.temperature > 0 or self.chains_only):
                proposal = proposal.main_path()  # sampling, grammars, penalties and logprobs verify chains only
            if not (proposal.geometric and proposal.path_probs[0] < self.cost.chain_floor(proposal.acceptance)):
                proposal = proposal.to_end(self.engine.is_eog)  # (else no length of it can pay: cost.chain_floor)
                k = self._worth(proposal)
                draft = proposal.first(k) if k > 0 else None
            if draft is None:
                self._shadow = proposal
        self.stats.t_draft += time.perf_counter() - td
        return proposal, draft

    def _worth(self, proposal: Draft) -> int:
        """How many of the proposal's first tokens (nodes) to verify (0: none); a chain's decode runs
        padded, the proposal's own tokens filling what they can of it."""
        if proposal.parents is not None:
            return self.cost.best_tree_size(proposal.path_probs)
        k = (self.cost.best_length(proposal.acceptance, len(proposal.tokens)) if proposal.path_probs is None
             else self.cost.best_chain_size(proposal.path_probs, proposal.acceptance, proposal.geometric))
        return min(self.cost.padded(k + 1) - 1, len(proposal.tokens)) if k > 0 else 0

    def _verify(self, last: int, draft: Draft | None):
        """One target decode: (its rows [1 + k, V], the rows judged [1 + k, V], the verdict, the key
        states of the positions it committed [1 + accepted, n_embd] (a view; empty when not keyed));
        the KV cache keeps `last` and the accepted part of the draft."""
        eng = self.engine
        self._rows = 1 if draft is None else len(draft.tokens) + 1  # the decode's rows (a chain's padded below)
        if draft is None:
            out = eng.eval_one(last, with_keys=self.keyed)
            if self._plain_step:
                return out.logits, out.logits, Verdict(accepted=0, next_token=int(out.logits[0].argmax())), out.keys
            logits = self._penalized(out.logits, np.empty(0, np.int32))
            return out.logits, logits, self._judge(logits, np.empty(0, np.int32)), out.keys
        if draft.parents is None:
            k = len(draft.tokens)
            start = eng.n_past
            size = self.cost.padded(k + 1)  # the cheaper size run instead (cost.py), where the context has room
            pad = size - (k + 1) if start + size <= eng.n_ctx else 0
            tokens = np.concatenate(([last], draft.tokens, np.full(pad, draft.tokens[-1]))).astype(np.int32)
            self._rows = len(tokens)
            out = eng.eval(tokens, outputs="all", with_keys=self.keyed)
            raw = out.logits[: k + 1]  # the padding's rows are not judged
            logits = self._penalized(raw, draft.tokens)
            verdict = self._judge(logits, draft.tokens, draft.acceptance)
            if verdict.accepted < k + pad:
                eng.truncate(start + 1 + verdict.accepted)
            return raw, logits, verdict, out.keys[: 1 + verdict.accepted] if self.keyed else out.keys
        out = eng.eval_tree(last, draft.tokens, draft.parents, with_keys=self.keyed)
        verdict = self.rule.tree(out.logits, draft.tokens, draft.parents, support=draft.acceptance)
        eng.keep_path(verdict.path, draft.tokens)
        kept = out.keys[np.concatenate(([0], verdict.path + 1)).astype(np.int64)] if self.keyed else out.keys
        return out.logits, out.logits, verdict, kept

    def _penalized(self, logits: np.ndarray, draft: np.ndarray) -> np.ndarray:
        return logits if self._pstate is None else self._pstate.apply(logits, draft)

    def _judge(self, logits: np.ndarray, draft: np.ndarray, support: float = 0.0) -> Verdict:
        """The rule's verdict on a chain draft (logits [k+1, V], draft [k]), under the grammar if any."""
        if self._gstate is not None:
            return verify_constrained(logits, draft, self.rule, self._gstate, self.rng)
        return self.rule(logits, draft, self.rng, support=support)

    def _accept(self, step: _Step) -> list[tuple[int, bool, str]]:
        """The accepted draft tokens with their soft flags and sources; the drafter learns how its
        draft fared."""
        draft, verdict = step.draft, step.verdict
        if draft is None:
            return []
        n = verdict.accepted
        self.stats.steps_with_draft += 1
        self.stats.drafted += len(draft.tokens)
        by_source = self.stats.drafted_by_source
        for src in (draft.source,) * len(draft.tokens) if draft.sources is None else draft.sources:
            by_source[src] = by_source.get(src, 0) + 1
        nodes = list(range(n)) if verdict.path is None else verdict.path.tolist()
        accepted = draft.tokens[nodes].tolist()
        first = accepted[0] if n else verdict.next_token  # the target's token after the last chosen one
        if verdict.path is None:
            self.drafter.update(Feedback(draft, n, first_token=first, next_token=verdict.next_token))
        else:  # the path drafted what it accepted, and one token more where it had a child
            at = int(verdict.path[-1]) if n else -1
            self.drafter.update(Feedback(draft, n, n + int((draft.parents == at).any()), path=verdict.path,
                                         first_token=first, next_token=verdict.next_token))
        self.drafter.extend(accepted)
        soft = verdict.soft.tolist() if verdict.soft is not None else [False] * n
        return [(tok, s, draft.source_of(i)) for tok, s, i in zip(accepted, soft, nodes)]

    def _next_token(self, step: _Step) -> tuple[int, str]:
        """The token after the accepted part: the target's own, or under the soft rule the
        proposal's token at the bonus row (`_bonus`)."""
        if self.soft_bonus and step.proposal is not None and self._gstate is None:
            return self._bonus(step.proposal, step.draft, step.verdict, step.logits)
        return step.verdict.next_token, TARGET

    def _bonus(self, proposal: Draft, draft: Draft | None, verdict, logits: np.ndarray) -> tuple[int, str]:
        """The next token, and where it came from, when the rule may take the proposal's token at the
        bonus row.

        The row after the accepted prefix was computed anyway (it gives the target's own next
        token). When every verified draft token stood and the proposal went on past the verified
        part (or nothing was verified), the proposal's next token sits exactly at that row, so the
        soft gate can judge it there at no cost. Chains only (a tree's next token depends on the
        path taken).
        """
        top = verdict.next_token
        k = 0 if draft is None else len(draft.tokens)
        if proposal.parents is not None or verdict.accepted != k or len(proposal.tokens) <= k:
            return top, TARGET
        x = int(proposal.tokens[k])
        if self.rule.takes_instead(logits[k], x, top, proposal.acceptance):
            return x, proposal.source
        return top, TARGET
