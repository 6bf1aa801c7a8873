"""The speculative loop: draft -> one batched target decode of [last token + draft] -> verify ->
commit the accepted prefix, truncate the rest -> emit events. A tree draft is decoded in one batch
too (one sequence per branch) and its accepted path kept.

With no drafter (or when the cost policy says a draft would not pay) a step is a plain one-token
decode, so `ar` is this same loop with drafting switched off. Under the soft rule the proposal's
token at the row after the verified part (the bonus row, computed anyway) is judged too (`_bonus`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from ..detokenize import StreamDetokenizer
from ..engine import Engine
from .cost import CostCurve, OnlineCost
from .drafters.base import Drafter
from .types import TARGET, Draft, Feedback, GenerationStats, TokenEvent
from .verify import AcceptanceRule, top2_gap

MAX_DRAFT = 32


class SpecDecoder:
    def __init__(
        self,
        engine: Engine,
        *,
        method: str = "ar",
        drafter: Drafter | None = None,
        rule: AcceptanceRule | None = None,
        cost: CostCurve | None = None,
        seed: int = 0,
        record_gaps: bool = False,
        soft_bonus: bool = True,
    ):
        if drafter is not None and cost is None:
            raise ValueError("a drafter needs a cost curve to decide when drafting pays")
        self.engine = engine
        self.method = method
        self.drafter = drafter
        self.rule = rule or AcceptanceRule()
        self.cost = OnlineCost(cost) if cost is not None else None  # refined by every decode's timing
        self.rng = np.random.default_rng(seed)
        self.record_gaps = record_gaps
        self.soft_bonus = soft_bonus
        self.stats = GenerationStats(method=method)

    def generate(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenEvent]:
        """Yield one TokenEvent per generated token; `self.stats` is complete when this returns."""
        eng = self.engine
        stats = self.stats = GenerationStats(method=self.method, prompt_tokens=len(prompt))
        detok = StreamDetokenizer(eng.piece)
        drafter = self.drafter

        t0 = time.perf_counter()
        hidden = drafter is not None and drafter.needs_hidden
        out = eng.prefill(prompt, outputs="last", hidden=hidden)
        verdict = self.rule(out.logits[-1:], np.empty(0, np.int32), self.rng)
        if self.record_gaps:
            stats.top2_gaps.append(top2_gap(out.logits[-1]))
        t1 = time.perf_counter()
        stats.t_prefill = t1 - t0
        stats.forwards = 1
        if drafter is not None:
            drafter.begin(prompt)

        last = verdict.next_token
        last_source = TARGET  # a draft source when `last` is a proposal's token soft-accepted at the bonus row
        shadow: Draft | None = None  # a draft we chose not to verify: scored for free next step
        produced = 0
        step_emitted = 0  # tokens the latest forward contributed before `last`
        while True:
            if eng.is_eog(last):
                stats.stop_reason = "eos"
                if step_emitted == 0:
                    stats.forwards -= 1  # that forward only said "stop": it produced no token
                break
            produced += 1
            stats.soft_accepted += int(last_source != TARGET)
            yield TokenEvent(last, detok.push(last), last_source, last_source != TARGET)
            if drafter is not None:
                drafter.extend((last,))
                if shadow is not None:
                    hit = int(shadow.tokens[0] == last)
                    drafter.update(Feedback(Draft(shadow.tokens[:1], shadow.source, shadow.acceptance, shadow.key), hit))
                    shadow = None
            if produced >= max_tokens:
                stats.stop_reason = "length"
                break
            if cancel is not None and cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            if eng.n_past + 1 >= eng.n_ctx:
                stats.stop_reason = "context"
                break

            draft = proposal = None
            if drafter is not None:
                td = time.perf_counter()
                room = min(MAX_DRAFT, max_tokens - produced, eng.n_ctx - eng.n_past - 2)
                proposal = drafter.propose(room) if room > 0 else None
                if proposal is not None:
                    if proposal.parents is not None and self.rule.temperature > 0:
                        proposal = proposal.main_path()  # sampling verifies chains only
                    if proposal.parents is None:
                        k = self.cost.best_length(proposal.acceptance, len(proposal.tokens))
                    else:
                        k = self.cost.best_size(proposal.path_probs)
                    if k > 0:
                        draft = proposal.first(k)
                    else:
                        shadow = proposal
                stats.t_draft += time.perf_counter() - td

            tv = time.perf_counter()
            if draft is None:
                out = eng.eval([last], outputs="last", hidden=hidden)
                verdict = self.rule(out.logits, np.empty(0, np.int32), self.rng)
                if self.record_gaps:
                    stats.top2_gaps.append(top2_gap(out.logits[0]))
            elif draft.parents is None:
                out = eng.eval(np.concatenate(([last], draft.tokens)).astype(np.int32), outputs="all", hidden=hidden)
                verdict = self.rule(out.logits, draft.tokens, self.rng, support=draft.acceptance)
                k = len(draft.tokens)
                if verdict.accepted < k:
                    eng.truncate(eng.n_past - (k - verdict.accepted))
            else:
                out = eng.eval_tree(last, draft.tokens, draft.parents, hidden=hidden)
                verdict = self.rule.tree(out.logits, draft.tokens, draft.parents, support=draft.acceptance)
                eng.keep_path(verdict.path, draft.tokens)
            dt = time.perf_counter() - tv
            stats.t_verify += dt
            stats.forwards += 1
            if self.cost is not None:
                self.cost.observe(1 if draft is None else len(draft.tokens) + 1, dt)

            step_emitted = 0
            if draft is not None:
                n = verdict.accepted
                stats.steps_with_draft += 1
                stats.drafted += len(draft.tokens)
                if verdict.path is None:
                    drafter.update(Feedback(draft, n))
                    accepted = draft.tokens[:n].tolist()
                else:  # the path drafted what it accepted, and one token more where it had a child
                    at = int(verdict.path[-1]) if n else -1
                    drafter.update(Feedback(draft, n, n + int((draft.parents == at).any())))
                    accepted = draft.tokens[verdict.path].tolist()
                soft = verdict.soft if verdict.soft is not None else np.zeros(n, bool)
                drafter.extend(accepted)
                stop = False
                for tok, is_soft in zip(accepted, soft.tolist()):
                    if eng.is_eog(tok):
                        stats.stop_reason = "eos"
                        stop = True
                        break
                    produced += 1
                    step_emitted += 1
                    stats.accepted += 1  # counted as emitted, so events and stats agree
                    stats.soft_accepted += int(is_soft)
                    yield TokenEvent(tok, detok.push(tok), draft.source, bool(is_soft))
                    if produced >= max_tokens:
                        stats.stop_reason = "length"
                        stop = True
                        break
                if stop:
                    break
            last, last_source = verdict.next_token, TARGET
            if self.soft_bonus and proposal is not None:
                last, last_source = self._bonus(proposal, draft, verdict, out.logits)

        tail = detok.flush()
        if tail:
            yield TokenEvent(-1, tail, TARGET)
        stats.tokens = produced
        stats.t_total = time.perf_counter() - t1

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
