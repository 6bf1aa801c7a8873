"""The verification cost curve c(k) and the draft-length policy built on it.

c(k) is the wall time of one target decode of k tokens divided by that of one token on the loaded
model (threads, backend and all), kept on disk per model fingerprint: measured on purpose (`bench`),
or learned from the decodes of earlier replies, starting from PRIOR, so no reply waits. A
conversation's speculator loads it once (`CurveMemory`) and keeps what its replies learn. On a 2-core CPU
c(8) is ~4, so a draft must be likely to be accepted before it pays; on a GPU the curve is flat and
the same policy drafts long.

Policy: if each successive draft token is accepted with probability a, a draft of length k yields
E(k) = 1 + a + ... + a^k tokens for a decode of k+1 tokens; a tree of k nodes yields 1 plus the sum
of its nodes' path probabilities. Plain decoding yields 1 token per c(1) = 1. Choose the k that
maximises E(k) / c(k+1); k = 0 means "do not draft".

c(k) is not monotonic on a CPU: kernels tile the batch. ggml's repacked Q4_K multiplies rows four
at a time and the rest one by one, and the 1.5B on the AMD EPYC here (2 threads, 128 tokens of
context) measured c(13..16) 8.3 / 8.7 / 9.5 / 7.6 and c(29..32) 13.7 / 14.4 / 14.3 / 12.8: a decode
of 16 rows costs less than one of 14. So every size 1..32 is measured, and a decode of n rows is
run at `padded(n)`, the cheapest measured size >= n, its cost the one the policy weighs (rows past
the draft are filled and ignored).

Past 32, every fourth size to 64 is measured (sizes between are interpolated): a copy known to go on
pays for longer decodes. The same 1.5B (128 tokens of context) measured c(32) 14.7, c(48) 19.1,
c(64) 24.6, so a copy verified whole yields 2.25 / 2.56 / 2.65 tokens per one-token decode's time
(at 900 tokens of context 1.84 / 2.06 / 2.28); llama-server's ngram-mod drafts 48-64 tokens.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import cache_dir

# every decode size a draft of up to 31 tokens can need, then every fourth to the loop's longest
PROBE_LENGTHS = tuple(range(1, 33)) + tuple(range(36, 65, 4))
MIN_GAIN = 1.05  # a draft must promise at least this speed ratio over plain decoding
FLOOR_STEPS = 100  # chain_floor's table: acceptance rounded up to a hundredth (up: never too high a floor)
PAD_MARGIN = 0.03  # a longer decode is run instead only when it costs this much less: not a timing's noise
LEARNED_AFTER = 24  # multi-token decodes a generation must have counted before its learned curve is kept


@dataclass(frozen=True)
class CostCurve:
    lengths: tuple[int, ...]  # decode sizes measured
    costs: tuple[float, ...]  # c(k) for each, c(1) = 1

    def __post_init__(self):
        sizes = np.arange(1, self.lengths[-1] + 1)
        cost = np.interp(sizes, self.lengths, self.costs)  # [n] c(size) for sizes 1..the longest measured
        pad = sizes.copy()  # [n] the size run for a decode of each size: the cheapest one at least as long
        object.__setattr__(self, "_plain", cost.copy())  # [n] c(size), unpadded (a tree runs as it is)
        for i in range(len(sizes) - 2, -1, -1):
            if cost[i + 1] < cost[i] * (1.0 - PAD_MARGIN):
                cost[i], pad[i] = cost[i + 1], pad[i + 1]
        object.__setattr__(self, "_effective", cost)  # [n] c(padded(size))
        object.__setattr__(self, "_padded", pad)
        # [FLOOR_STEPS + 1] chain_floor at acceptance j / FLOOR_STEPS: a draft of n tokens yields at most
        # first * S_n(a) more tokens (S_n = 1 + a + ... + a^(n-1)) and, by either of best_chain_size's
        # rules, goes only if those beat MIN_GAIN * (c(n + 1) - 1)
        runs = np.arange(FLOOR_STEPS + 1)[:, None] / FLOOR_STEPS
        sums = np.cumsum(runs ** np.arange(len(cost) - 1)[None, :], axis=1)  # [steps, n] S_n(a), n = 1..
        floors = np.min(MIN_GAIN * (cost[None, 1:] - 1.0) / sums, axis=1) if len(cost) > 1 else np.ones(FLOOR_STEPS + 1)
        object.__setattr__(self, "_floors", floors.tolist())  # a list: read per step without numpy

    def cost(self, k: int) -> float:
        return float(np.interp(k, self.lengths, self.costs))

    def chain_floor(self, acceptance: float) -> float:
        """The least first-token chance at which a `geometric` chain (each token after the first
        accepted at `acceptance`) can be worth verifying at any length: under it best_chain_size
        returns 0. A step's proposal mostly cannot pay on a CPU's curve (a chance match in a chat
        reply), and this check costs a table read where the policy's arrays cost ~50 us a step,
        ~1% of a token on the 135M."""
        return self._floors[min(FLOOR_STEPS, math.ceil(max(acceptance, 0.0) * FLOOR_STEPS))]

    def padded(self, n: int) -> int:
        """The decode size to run for n rows: the cheapest size >= n measured (n itself if none is
        cheaper; n past the curve's end: n)."""
        return int(self._padded[n - 1]) if n <= len(self._padded) else n

    def effective(self, n: int) -> float:
        """What a decode of n rows costs when run at `padded(n)`."""
        return float(self._effective[n - 1]) if n <= len(self._effective) else self.cost(n)

    def best_length(self, acceptance: float, max_len: int, min_gain: float = MIN_GAIN) -> int:
        """Draft length in 0..max_len maximising expected tokens per unit of decode time."""
        if max_len <= 0 or acceptance <= 0:
            return 0
        a = min(acceptance, 0.999)
        return self.best_size(a ** np.arange(1, max_len + 1), min_gain)

    def best_chain_size(self, path_probs: np.ndarray, acceptance: float, head_usual: bool = False) -> int:
        """Draft length for a chain whose tokens differ in how sure they are: path_probs [k], where
        a token the drafter doubts (its own chance under `acceptance`, the chain's usual) lowers
        the product from there on.

        Tokens per decode is the wrong measure here. Stopping just before the first doubtful token
        resolves it for nearly nothing (the decode's own next token is the target's choice there),
        and the decodes after it run at the chain's usual rate; drafting through it risks the
        whole decode on it. So where the usual chain would reach the doubt, the lengths from the
        doubt on are weighed at the rate the usual chain reaches (r): the one with the most expected
        tokens less r times its cost wins (a length short of the doubt would leave it for a later
        decode). Where the usual chain would stop short of it anyway, it is sized as that chain.
        Copy's edit (the 1.5B): its first `cls`, in the request's words and so doubtful at one
        half, one token into a sure 63: 63 verified for 1 (c(64) 13.5) where stopping there costs
        c(2) 1.8.

        `head_usual`: path_probs[0] is the drafter's usual chance for a first token (a geometric
        chain's, estimated apart from the run), not a doubt about this one: the usual chain starts
        from it and only the tokens after it can be doubts. Read as a doubt, a first-token
        estimate under the run's made every step's proposal "stop before its first token" (draft
        nothing) in favour of a run that never came: a copy 0.924 / 0.976 sure, 9 tokens to a
        passage's end, went undrafted for 8 steps (docqa-rag-del, the 1.5B)."""
        n_max = min(len(path_probs), self.lengths[-1] - 1)
        if n_max <= 0:
            return 0
        path = np.asarray(path_probs[:n_max], dtype=float)
        own = path / np.concatenate(([1.0], path[:-1]))  # [n] each token's chance, the one before accepted
        a = min(acceptance, 0.999)
        if head_usual:  # the first token is the usual head: doubts only after it
            doubts = np.flatnonzero(own[1:] < a - 1e-9) + 1
            usual = path[0] * a ** np.arange(n_max)
        else:
            doubts = np.flatnonzero(own < a - 1e-9)
            usual = a ** np.arange(1, n_max + 1)
        if len(doubts) == 0:
            return self.best_size(path)
        first = int(doubts[0])
        if (short := self.best_size(usual)) < first or short == 0:
            return short  # the usual chain stops before the doubt, or does not pay at all
        rate = float(np.max((1.0 + np.cumsum(usual)) / self._effective[1 : n_max + 1]))
        sizes = np.arange(first, n_max + 1)  # draft lengths from the doubt on
        expected = 1.0 + np.concatenate(([0.0], np.cumsum(path)))[sizes]
        value = expected - rate * self._effective[sizes]  # c(k + 1) for a draft of k
        return int(sizes[int(np.argmax(value))])

    def best_size(self, path_probs: np.ndarray, min_gain: float = MIN_GAIN, padded: bool = True) -> int:
        """How many of a draft's first nodes to verify: path_probs [k] are the nodes' chances of
        being accepted (a^i for a chain), non-increasing, so a draft of n nodes yields
        1 + sum(path_probs[:n]) tokens for a decode of n + 1, run padded (a chain) or as it is
        (padded=False: a tree, whose decode the loop does not pad). 0: do not draft."""
        n_max = min(len(path_probs), self.lengths[-1] - 1)
        if n_max <= 0:
            return 0
        expected = 1.0 + np.cumsum(path_probs[:n_max])  # [K]
        costs = self._effective if padded else self._plain
        gain = expected / costs[1 : n_max + 1]  # decodes of 2..n_max + 1 rows
        best = int(np.argmax(gain))
        return best + 1 if gain[best] >= min_gain else 0

    def to_dict(self) -> dict:
        return {"lengths": list(self.lengths), "costs": [round(c, 3) for c in self.costs]}


FLAT = CostCurve(PROBE_LENGTHS, tuple(1.0 for _ in PROBE_LENGTHS))
PRIOR_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # the sizes PRIOR was measured at
# The curve a model starts with before anything is known of it: Qwen2.5-Coder-1.5B Q4_K_M measured on
# 2 CPU cores (c(2) 1.5, c(4) 1.9, c(8) 3.2, c(16) 3.9, c(32) 6.8). Steep enough that early drafts are
# short (cautious on a CPU); every decode's timing then corrects it (OnlineCost), and what a
# generation learned is kept for the next one, so no reply waits for a calibration.
PRIOR = CostCurve(PRIOR_LENGTHS, (1.0, 1.5, 1.7, 1.9, 2.5, 3.2, 3.6, 3.9, 5.4, 6.8))


# Learning c(k) from a reply's own decodes. A busy machine (another process on the cores) stretches
# every decode, the one-token ones too, so a ratio is only sound when the one-token time it divides
# by was taken under the same load as the k-token time. In issue 36 a reply on a fresh data dir,
# beside a benchmark, learned c(8) 6.25 and c(32) 14.8 for the 1.5B (PRIOR: 3.2 and 6.8) and stopped
# drafting over text it was copying: its one-token time (an EMA) was last refreshed before the load
# came. Replayed on synthetic timings (tests/test_cost_curve_load.py), a copy of 74 drafts at twice
# the time after a quiet start learned c(32) 15.3 that way; load coming and going at random gave
# c(32) 3.6 to 12.0 over 20 seeds. The rules below keep both at 6.9 to 7.2.
BUSY = 1.3  # a one-token decode this far over the quickest of the last REF_WINDOW: a busy machine.
# Load doubled decodes in issue 36; a quiet machine's vary by a few percent, and a reply's growing
# context adds ~1% per 400 tokens on the 1.5B (28 KB of KV cache read a token of context beside 1.04 GiB
# of weights), ~10% on the 135M (23 KB beside 94 MiB), so 1.3 sits clear of both.
REF_WINDOW = 8  # recent one-token decodes whose quickest is the reference: load only ever adds time
PER_REFERENCE = 4  # multi-token decodes one quiet one-token decode vouches for: a copy runs dozens of
# drafts with no one-token decode between (74 in issue 36); only the first few surely share its load
SAMPLE_WINDOW = 32  # the factor is the median of this many latest counted decodes, so fewer than half
# of them taken across load changes (at most PER_REFERENCE a change) cannot move it
MIN_SAMPLES = 8  # counted decodes (two references at least) before the factor leaves the curve's own
MAX_STEEPER = 3.0  # cap on a saved learned curve's extra cost c(k) - 1 over PRIOR's. The steepest
# curve measured here, the 135M's, is 2.15x PRIOR's at 32 (12.46 vs 5.8); on the cap a copy's draft
# (claimed 0.99) still pays, 15 tokens at 1.53x plain, so a saved curve never stops the drafts that
# re-learn it.


class OnlineCost:
    """A curve (measured, learned or the prior), corrected by the decode times the loop actually sees.

    A probe at set-up cannot know the context length, cache state or machine load of a real
    generation. The loop reports every decode's size and wall time. A k-token decode's ratio to the
    one-token reference (the quickest of the last REF_WINDOW one-token decodes) counts only while the
    latest one-token decode was not busy (over BUSY x the reference) and for the first PER_REFERENCE
    decodes after it; the rest are `rejected`. The factor f is the median over the last SAMPLE_WINDOW
    counted decodes of observed extra cost / the curve's extra cost, and the curve's extra cost is
    scaled by it: 1 + (c(k) - 1) * f. c(1) stays 1; the curve's shape comes from the probe.
    """

    def __init__(self, prior: CostCurve):
        self.prior = prior
        self.ones: deque[float] = deque(maxlen=REF_WINDOW)  # latest one-token decodes' seconds
        self.vouched = 0  # multi-token decodes left that the latest one-token decode vouches for
        self.samples: deque[tuple[int, float]] = deque(maxlen=SAMPLE_WINDOW)  # (k, t_k / reference)
        self.observed = 0  # multi-token decodes counted
        self.rejected = 0  # multi-token decodes left out: busy machine or no recent reference
        self.factor = 1.0  # observed extra cost / the curve's extra cost
        self._curve: CostCurve | None = None  # the scaled curve, rebuilt only when factor moves

    def observe(self, n_tokens: int, seconds: float) -> None:
        if n_tokens == 1:
            self.ones.append(seconds)
            self.vouched = 0 if seconds > BUSY * min(self.ones) else PER_REFERENCE
            return
        extra = self.prior.cost(n_tokens) - 1.0
        if extra <= 0.05:
            return  # a flat curve: nothing to scale
        if self.vouched <= 0:
            self.rejected += 1
            return
        self.vouched -= 1
        self.samples.append((n_tokens, seconds / min(self.ones)))
        self.observed += 1
        if len(self.samples) >= MIN_SAMPLES:
            ratios = [(r - 1.0) / (self.prior.cost(k) - 1.0) for k, r in self.samples]
            self.factor = max(float(np.median(ratios)), 0.0)
            self._curve = None

    @property
    def curve(self) -> CostCurve:
        if self._curve is None:
            f = self.factor
            self._curve = CostCurve(self.prior.lengths, tuple(1.0 + (c - 1.0) * f for c in self.prior.costs))
        return self._curve

    def best_length(self, acceptance: float, max_len: int) -> int:
        return self.curve.best_length(acceptance, max_len)

    def padded(self, n: int) -> int:
        return self.curve.padded(n)

    def best_chain_size(self, path_probs: np.ndarray, acceptance: float, head_usual: bool = False) -> int:
        return self.curve.best_chain_size(path_probs, acceptance, head_usual)

    def chain_floor(self, acceptance: float) -> float:
        return self.curve.chain_floor(acceptance)

    def best_tree_size(self, path_probs: np.ndarray) -> int:
        return self.curve.best_size(path_probs, padded=False)


# The first decode after a long one pays extra: on the AMD EPYC here (AVX-512) a one-token decode of
# the 1.5B took 29-31 ms after another and 41-45 ms after one of 32-64 rows (8-16 rows: +0-3 ms). The
# first probe timed each size in turn, 1 right after 64, so its unit was such a decode: it measured
# c(2) 1.09, c(4) 1.9, c(8) 4.3 where it now measures 1.91, 3.32, 6.98, and the loop's own 2-row
# decodes cost 1.85-1.98 of its one-token ones (pld and sense on the everyday kinds drafted at
# that price and ran 0.94x and 0.93x `ar`). PROBE_VERSION 2 settles each timed decode behind a
# one-token one; a curve the first probe measured is not read (the prior serves; `curve --if-missing`
# measures it again).
PROBE_VERSION = 2


def measure_cost_curve(engine, *, reps: int = 5, context: int = 128) -> CostCurve:
    """Time decodes of each probe length after `context` filler tokens; engine state is restored."""
    base = engine.n_past
    saved = engine.tokens[:]
    lengths = [k for k in PROBE_LENGTHS if base + context + k <= engine.n_ctx]
    rng = np.random.default_rng(0)
    filler = rng.integers(100, min(engine.n_vocab, 20000), size=context + max(lengths))
    engine.eval(filler[:context], base, outputs="last", with_keys=False)
    times: dict[int, list[float]] = {k: [] for k in lengths}
    for _ in range(reps):
        for k in lengths:  # interleaved, so drift on a shared machine hits every length alike
            # each timed decode comes after a one-token decode, as the loop's do: the first decode after
            # a long one pays extra (PROBE_VERSION), and without this the unit, c(1), was always taken there
            engine.eval(filler[context : context + 1], base + context, outputs="last", with_keys=False)
            t0 = time.perf_counter()
            out = engine.eval(filler[context : context + k], base + context, outputs="all", with_keys=False)
            out.logits[-1].argmax()
            times[k].append(time.perf_counter() - t0)
    engine.truncate(base)
    engine.tokens[:] = saved
    # the quickest of the reps, not their median: load only adds time, and a curve measured beside
    # other work (a build, a test run) kept a median c(2) of 4.86 for the 1.5B where the machine alone
    # gives 1.48, and the bench sized every draft by it
    one = min(times[1])
    # not made monotonic: a size the kernels tile well costs less than a shorter one (`padded`)
    costs = [max(1.0, min(times[k]) / one) for k in lengths]
    return CostCurve(tuple(lengths), tuple(costs))


def _cache_file(engine) -> Path:
    from .. import native

    rpc = f"-rpc{len(engine.rpc_workers)}" if engine.rpc_workers else ""  # a network hop per decode: another curve
    build = f"{native.llama_cpp.__version__}-{native.build_id()}"  # the version and the build: flags, our patches
    key = f"{engine.fingerprint}-t{engine.n_threads}-g{engine.n_gpu_layers}{rpc}-{build}"
    return cache_dir() / "cost" / f"{key}.json"


def _read(path: Path) -> tuple[CostCurve, str] | None:
    try:
        raw = json.loads(path.read_text())
        source = raw.get("source", "measured")
        if source == "measured" and raw.get("probe", 1) < PROBE_VERSION:
            return None  # measured by an earlier probe (PROBE_VERSION): as good as none
        return CostCurve(tuple(raw["lengths"]), tuple(raw["costs"])), source
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None  # none yet, or damaged: the prior serves


def _write(path: Path, curve: CostCurve, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    # unrounded (to_dict rounds for reports): a curve read back is the very curve that was kept
    tmp.write_text(json.dumps({"lengths": list(curve.lengths), "costs": list(curve.costs), "source": source,
                               "probe": PROBE_VERSION}))
    tmp.replace(path)


def curve_source(engine) -> str:
    """Where this model's curve on this machine comes from: "measured" (on purpose: `bench`,
    `sense-local curve`), "learned" (kept from replies' own decodes), "prior" (nothing yet) or
    "flat" (SENSE_COST_FLAT: none is read). Only the engine's identity is read (fingerprint,
    threads, GPU layers, RPC workers): no decode."""
    if os.environ.get("SENSE_COST_FLAT"):
        return "flat"
    found = _read(_cache_file(engine))
    return "prior" if found is None else found[1]


def cost_curve_known(engine) -> bool:
    """Whether this model's curve was measured or learned here (else generation starts from PRIOR)."""
    return bool(os.environ.get("SENSE_COST_FLAT")) or _read(_cache_file(engine)) is not None


def cost_curve_for(engine, *, measure: bool = False) -> CostCurve:
    """The engine's cost curve: measured or learned before on this machine, else PRIOR at once.
    measure=True measures it now and keeps it (what `bench` does on every run: 87 s for the 1.5B on
    2 cores, 52 s of it for the sizes 1..32; ~12 s for the 135M), so a curve measured once on a busy
    machine does not size the drafts of every later run; a reply never waits for that."""
    if os.environ.get("SENSE_COST_FLAT"):
        return FLAT
    path = _cache_file(engine)
    if measure:
        curve = measure_cost_curve(engine)
        _write(path, curve, "measured")
        return curve
    found = _read(path)
    return PRIOR if found is None else found[0]


def remember_learned(engine, online: OnlineCost) -> CostCurve | None:
    """Keep what a generation learned of the curve (after LEARNED_AFTER counted multi-token decodes),
    no steeper than MAX_STEEPER x PRIOR's extra cost, unless the curve was measured on purpose: the
    next generation starts from it (and, drafting still, corrects it). The curve kept, or None."""
    if online.observed < LEARNED_AFTER or online.prior is FLAT or os.environ.get("SENSE_COST_FLAT"):
        return None
    path = _cache_file(engine)
    found = _read(path)
    if found is not None and found[1] == "measured":
        return None
    learned = online.curve
    cap = [1.0 + MAX_STEEPER * (PRIOR.cost(k) - 1.0) for k in learned.lengths]
    kept = CostCurve(learned.lengths, tuple(min(c, m) for c, m in zip(learned.costs, cap)))
    _write(path, kept, "learned")
    return kept


class CurveMemory:
    """The cost curve one model's replies start from, loaded once by its owner (a conversation's
    speculator): measured or learned before on this machine, else PRIOR. With `remember`, what each
    reply learned is kept (`learned`), here and on disk, for the next reply and the next run."""

    def __init__(self, engine, *, remember: bool):
        self.engine = engine
        self.remember = remember
        self._curve: CostCurve | None = None  # loaded when a drafting reply first asks

    @property
    def curve(self) -> CostCurve:
        if self._curve is None:
            self._curve = cost_curve_for(self.engine)
        return self._curve

    def learned(self, online: OnlineCost) -> None:
        """A reply is over: what its decodes taught (online) becomes the next reply's start."""
        kept = remember_learned(self.engine, online) if self.remember else None
        if kept is not None:
            self._curve = kept
