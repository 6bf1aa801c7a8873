"""One row of the bench's results: a method (or peer) on a task, its figures over the reps."""
from __future__ import annotations

from dataclasses import dataclass

NEAR_TIE = 0.25  # top-2 logit gap under which batched arithmetic may flip the argmax


@dataclass
class RunRow:
    task: str
    kind: str
    method: str
    tokens: int
    forwards: int
    tau: float  # median over reps (each rep's text may part at a near-tie and copy more or less)
    tok_per_s: float  # median over reps
    speedup_vs_ar: float  # median tok/s over ar's median tok/s on the same prompt
    identical_to_ar: bool
    divergence_gap: float | None  # ar's top-2 logit gap where the output first parts from ar's
    drafted: int = 0
    accepted: int = 0
    error: str | None = None
    soft_accepted: int = 0
    mean_logprob: float | None = None  # target's mean log-probability of the output (every method, when a soft one runs)
    chrf_vs_ar: float | None = None  # likewise
    answer_ok: bool | None = None  # docqa tasks with a known answer string
    copy_ceiling: float | None = None  # ar: tau of the copying oracle on ar's output (copy_ceiling.py)
    tau_reps: list[float] | None = None  # each rep's tau, in rep order
    tok_per_s_reps: list[float] | None = None  # each rep's tok/s, in rep order (summary.rep_spread)
    prefill_tok_per_s: float | None = None  # ar and plain llama-server: a fresh prefill's speed, median over reps
    output_ids: list[int] | None = None  # the first rep's tokens (compare runs of two commits: --json)
