"""Is splicing a passage's precomputed KV into a grounded prompt viable? (issue 30)

For each labelled question over the bench's pydoc store, the grounded prompt is built the way the
product builds it (GroundedChat.prepare: 3 passages laid out as `[N] name, loc\\n<text>`). Then:

- full: the whole prompt prefilled at once (the reference): last-position logits, greedy answer.
- splice: each passage unit (the tokens after `[N]` to the passage's end, matched as the longest
  token run its own tokenization shares with the prompt) is evaluated on its own in the scratch
  sequence and saved (`llama_state_seq_get_data`); the prompt is then assembled in sequence 0 by
  prefilling the gaps (template, instruction, labels, question) and placing each saved passage:
  `set_data` into sequence 1, `llama_memory_seq_add` to its place, `seq_cp` 1 -> 0, `seq_rm` 1.
  Variants: `bare` (passage at positions 0.., nothing before it), `preamble` (after P, the prompt's
  tokens before the first passage, held in sequence 2; P ends with `[1]`, so every passage is
  evaluated as passage 1), `numbered` (after P and the passage's own `\n\n[N]`), `head16` / `head32`
  (numbered, and each placed passage's first 16 / 32 tokens evaluated again in place, in the
  assembled context: a selective recompute in CacheBlend's manner), and `exact`, a
  control whose passage states are cut from the full prefill itself (no shift, no context lost:
  mechanics only).

Per question and variant: KL(full || splice) of the next-token distribution, top-1 agreement, the
greedy answers' first parting token (and whether the full run had a near-tie there: top-2 logit
gap < 0.25), the cited passage numbers of both answers, whether each cites the labelled topic's
passage and contains the labelled answer string, and timing: full prefill vs the standalone
passage computations vs the splice assembly (gap prefills + set_data + shift + the decode of the
last gap, whose logits give the first token: what a turn waits with passage states cached; `head`
leaves out the first gap, the preamble a prefix cache would hold).

    python -m benchmarks.passage_splice_probe --model test|default [--questions N] [--json F]
        [--suite quick|all-topics] [--variants exact,bare,preamble,numbered,head16,head32]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.doc_questions import HELD_OUT, HELD_OUT_2, QUESTIONS
from benchmarks.doc_questions import corpus_topics as all_topics
from sense_local import native
from sense_local.bench.quality import contains_answer
from sense_local.bench.rows import NEAR_TIE
from sense_local.bench.runner import first_divergence
from sense_local.bench.stores import bench_store, pydoc_store
from sense_local.bench.tasks import DOCQA, corpus_topics
from sense_local.engine import Engine
from sense_local.grounding.chat import GroundedChat
from sense_local.side_pass import SCRATCH_SEQ
from sense_local.speculative.verify import top2_gap
from sense_local.tree_layout import TREE_SEQ0

llama_cpp = native.llama_cpp
PREAMBLE_SEQ = TREE_SEQ0  # holds P while passages are evaluated after it (no tree is drafted here)
VARIANTS = ("exact", "bare", "preamble", "numbered", "head16", "head32")  # headN: numbered, N recomputed
CITATION = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Probe:
    topic: str  # the pydoc topic that answers it
    question: str
    answer: str | None  # a string a right answer contains


@dataclass
class Unit:
    number: int  # [N] in the prompt
    topic: str  # its document's stem
    start: int  # prompt position of the run's first token
    tokens: list[int]  # the run: prompt[start : start + len]
    unmatched: int  # tokens of the unit's own tokenization outside the run (merged boundaries)


@dataclass
class SavedPassage:
    unit: Unit
    data: ctypes.Array  # llama_state_seq_get_data of the sequence holding only the unit
    first_pos: int  # position of its first token as saved


@dataclass
class Run:
    logits: np.ndarray  # [n_vocab] float32, the prompt's last position
    answer: list[int]  # greedy tokens
    gaps: list[float]  # top-2 logit gap at each answer step
    text: str
    seconds: float  # full: the prefill; splice: the assembly
    head_seconds: float = 0.0  # splice: the assembly after the first gap
    place_seconds: float = 0.0  # splice: set_data + seq_add + seq_cp + seq_rm, all passages


@dataclass
class Row:
    question: str
    variant: str
    prompt_tokens: int
    passage_tokens: int  # tokens placed from saved states
    kl: float  # KL(full || splice), nats
    top1_agree: bool
    identical: bool
    parting: int | None  # first answer token where they differ (None: identical)
    parting_near_tie: bool | None  # the full run's top-2 gap there < NEAR_TIE
    cites_full: list[int]
    cites_splice: list[int]
    right_cite_full: bool  # cites the labelled topic's passage
    right_cite_splice: bool
    answered_full: bool | None  # contains the labelled answer string (None: no label)
    answered_splice: bool | None
    full_s: float
    standalone_s: float  # computing the passage states (and P once)
    assembly_s: float
    head_s: float
    place_s: float
    state_bytes: int


def probes(topics: list[str], n: int) -> list[Probe]:
    """Labelled questions whose topic is in the store, labelled-set first."""
    topics = set(topics)
    pool = [Probe(q.topic, q.question, q.answer) for q in QUESTIONS]
    pool += [Probe(t, q, a) for t, q, a in DOCQA]
    pool += [Probe(q.topic, q.question, q.answer) for q in HELD_OUT + HELD_OUT_2]
    return [p for p in pool if p.topic in topics][:n]


def longest_run(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """The longest run common to token arrays a and b: (start in a, start in b, length)."""
    prev = np.zeros(len(b) + 1, dtype=np.int64)
    best = (0, 0, 0)
    for i in range(len(a)):
        cur = np.zeros_like(prev)
        cur[1:] = np.where(b == a[i], prev[:-1] + 1, 0)
        j = int(cur.argmax())
        if cur[j] > best[2]:
            n = int(cur[j])
            best = (i - n + 1, j - n, n)
        prev = cur
    return best


def passage_units(engine: Engine, turn, prompt: np.ndarray) -> list[Unit]:
    """Each passage's unit (after `[N]` to the passage's end) as a run of prompt tokens."""
    content = turn.content
    heads = [content.find(f"[{s.number}] {Path(s.path).name}, {s.location}\n") for s in turn.sources]
    if any(h < 0 for h in heads):
        raise RuntimeError("a passage header is not where grounding/prompt.py puts it")
    ends = [h - 2 for h in heads[1:]] + [content.rfind("\n\nQuestion: ")]
    units = []
    for source, head, end in zip(turn.sources, heads, ends):
        text = content[head + len(f"[{source.number}]") : end]
        own = np.asarray(engine.tokenize(text, add_special=False), dtype=np.int32)
        _, start, n = longest_run(own, prompt)
        units.append(Unit(source.number, Path(source.path).stem, start, prompt[start : start + n].tolist(),
                          len(own) - n))
    if any(b.start < a.start + len(a.tokens) for a, b in zip(units, units[1:])):
        raise RuntimeError("passage runs overlap or are out of order")
    return units


def decode_in(engine: Engine, seq: int, tokens, first_pos: int) -> None:
    """Evaluate `tokens` in sequence `seq` at positions first_pos.. (no key states, one output)."""
    tokens = np.asarray(tokens, dtype=np.int32)
    engine.key_source.switch(engine._ctx, False)
    batch = engine._batch
    for off in range(0, len(tokens), engine.n_batch):
        chunk = tokens[off : off + engine.n_batch]
        k = len(chunk)
        batch.fill(chunk, first_pos + off)
        batch.logits[:k] = 0
        batch.logits[k - 1] = 1
        batch.assign_sequence(k, seq)
        try:
            rc = engine._decode(batch)
        finally:
            batch.assign_sequence(k, 0)
        if rc != 0:
            raise RuntimeError(f"llama_decode in sequence {seq} failed with code {rc}")


def save_seq(engine: Engine, seq: int) -> ctypes.Array:
    size = llama_cpp.llama_state_seq_get_size(engine._ctx, seq)
    data = (ctypes.c_uint8 * size)()
    if llama_cpp.llama_state_seq_get_data(engine._ctx, data, size, seq) != size:
        raise RuntimeError(f"llama_state_seq_get_data of sequence {seq} wrote less than its size")
    return data


def standalone_states(engine: Engine, units: list[Unit], prompt: np.ndarray,
                      preamble: bool, numbered: bool = False) -> tuple[list[SavedPassage], float]:
    """Each unit evaluated on its own in the scratch sequence (after P when `preamble`) and saved
    holding only the unit's cells; (states, seconds including P's evaluation). P ends with the first
    passage's label `[1]`; `numbered` evaluates each later unit after P and its own label (the
    prompt's tokens between the previous unit and it, `\n\n[N]`), so its states see its own number."""
    engine.reset()
    mem = engine._mem
    t0 = time.perf_counter()
    base = units[0].start if preamble else 0
    if base:
        decode_in(engine, PREAMBLE_SEQ, prompt[:base], 0)
    saved = []
    for i, unit in enumerate(units):
        if base:
            llama_cpp.llama_memory_seq_cp(mem, PREAMBLE_SEQ, SCRATCH_SEQ, -1, -1)
        label = prompt[units[i - 1].start + len(units[i - 1].tokens) : unit.start] if numbered and i else prompt[:0]
        if len(label):
            decode_in(engine, SCRATCH_SEQ, label, base)
        first = base + len(label)
        decode_in(engine, SCRATCH_SEQ, unit.tokens, first)
        if first and not llama_cpp.llama_memory_seq_rm(mem, SCRATCH_SEQ, 0, first):
            raise RuntimeError("seq_rm could not drop P from the scratch sequence")
        saved.append(SavedPassage(unit, save_seq(engine, SCRATCH_SEQ), first))
        llama_cpp.llama_memory_seq_rm(mem, SCRATCH_SEQ, -1, -1)
    llama_cpp.llama_memory_seq_rm(mem, PREAMBLE_SEQ, -1, -1)
    return saved, time.perf_counter() - t0


def exact_states(engine: Engine, units: list[Unit]) -> list[SavedPassage]:
    """The control: each unit's cells cut from the full prefill in sequence 0 (at their own places)."""
    mem, saved = engine._mem, []
    for unit in units:
        llama_cpp.llama_memory_seq_cp(mem, 0, SCRATCH_SEQ, unit.start, unit.start + len(unit.tokens))
        saved.append(SavedPassage(unit, save_seq(engine, SCRATCH_SEQ), unit.start))
        llama_cpp.llama_memory_seq_rm(mem, SCRATCH_SEQ, -1, -1)
    return saved


def place(engine: Engine, passage: SavedPassage) -> None:
    """Put a saved passage at its prompt position in sequence 0 and commit its tokens."""
    unit, mem = passage.unit, engine._mem
    if engine.n_past != unit.start:
        raise RuntimeError(f"placing at {unit.start} with {engine.n_past} tokens committed")
    n = llama_cpp.llama_state_seq_set_data(engine._ctx, passage.data, len(passage.data), SCRATCH_SEQ)
    if n != len(passage.data):
        raise RuntimeError(f"llama_state_seq_set_data read {n} of {len(passage.data)} bytes")
    delta = unit.start - passage.first_pos
    if delta:
        llama_cpp.llama_memory_seq_add(mem, SCRATCH_SEQ, -1, -1, delta)
    llama_cpp.llama_memory_seq_cp(mem, SCRATCH_SEQ, 0, -1, -1)
    llama_cpp.llama_memory_seq_rm(mem, SCRATCH_SEQ, -1, -1)
    engine.tokens.extend(unit.tokens)  # the engine's bookkeeping: n_past is len(tokens)
    last = llama_cpp.llama_memory_seq_pos_max(mem, 0)
    if last != engine.n_past - 1:
        raise RuntimeError(f"sequence 0 ends at {last} after placing, {engine.n_past - 1} expected")


def greedy(engine: Engine, row: np.ndarray, max_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy answer from the prompt's last logits, one eval a token; (tokens, top-2 gaps)."""
    answer, gaps = [], []
    while True:
        gaps.append(top2_gap(row))
        token = int(np.argmax(row))
        answer.append(token)
        if engine.is_eog(token) or len(answer) >= max_tokens:
            return answer, gaps
        row = engine.eval([token], outputs="last", with_keys=False).logits[-1]


def full_run(engine: Engine, prompt: np.ndarray, units: list[Unit], max_tokens: int) -> tuple[Run, list[SavedPassage]]:
    """The reference: the whole prompt prefilled, answered; and the control's passage states,
    cut from it before the answer."""
    engine.reset()
    t0 = time.perf_counter()
    logits = engine.eval(prompt, 0, outputs="last", with_keys=False).logits[-1].copy()
    seconds = time.perf_counter() - t0
    exact = exact_states(engine, units)
    answer, gaps = greedy(engine, logits, max_tokens)
    return Run(logits, answer, gaps, engine.detokenize(answer), seconds), exact


def recompute_head(engine: Engine, unit: Unit, n: int) -> None:
    """Evaluate the first `n` tokens of a placed unit again in place, in the assembled context (their
    spliced cells dropped first); the unit's later cells keep their standalone states."""
    n = min(n, len(unit.tokens))
    if n <= 0:
        return
    mem, end = engine._mem, unit.start + n
    # llama.cpp decodes a sequence only at its end: the head is evaluated in the scratch sequence,
    # holding what precedes the unit, and its cells then replace the spliced ones in sequence 0
    llama_cpp.llama_memory_seq_cp(mem, 0, SCRATCH_SEQ, 0, unit.start)
    decode_in(engine, SCRATCH_SEQ, unit.tokens[:n], unit.start)
    if not llama_cpp.llama_memory_seq_rm(mem, 0, unit.start, end):
        raise RuntimeError("seq_rm could not drop a placed passage's head")
    llama_cpp.llama_memory_seq_cp(mem, SCRATCH_SEQ, 0, unit.start, end)
    llama_cpp.llama_memory_seq_rm(mem, SCRATCH_SEQ, -1, -1)


def spliced_run(engine: Engine, prompt: np.ndarray, saved: list[SavedPassage], max_tokens: int,
                recompute: int = 0) -> Run:
    """The prompt assembled in sequence 0 from gap prefills and the saved passages (each one's first
    `recompute` tokens evaluated again in place), then answered."""
    engine.reset()
    t0 = time.perf_counter()
    head = placing = 0.0
    for passage in saved:
        gap = prompt[engine.n_past : passage.unit.start]
        if len(gap):
            engine.eval(gap, outputs="last", with_keys=False)
        if not head:
            head = time.perf_counter()
        t = time.perf_counter()
        place(engine, passage)
        placing += time.perf_counter() - t
        recompute_head(engine, passage.unit, recompute)
    logits = engine.eval(prompt[engine.n_past :], outputs="last", with_keys=False).logits[-1].copy()
    t1 = time.perf_counter()
    if engine.tokens != prompt.tolist():
        raise RuntimeError("the assembled tokens are not the prompt's")
    answer, gaps = greedy(engine, logits, max_tokens)
    return Run(logits, answer, gaps, engine.detokenize(answer), t1 - t0, t1 - head, placing)


def kl_divergence(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """KL(p || q) in nats of the softmax distributions of two logit rows."""
    lp = p_logits.astype(np.float64)
    lq = q_logits.astype(np.float64)
    lp = lp - lp.max() - np.log(np.exp(lp - lp.max()).sum())
    lq = lq - lq.max() - np.log(np.exp(lq - lq.max()).sum())
    return float(np.sum(np.exp(lp) * (lp - lq)))


def compare(probe: Probe, variant: str, prompt: np.ndarray, units: list[Unit], full: Run, splice: Run,
            saved: list[SavedPassage], standalone_s: float) -> Row:
    parting = first_divergence(full.answer, splice.answer)
    near = None if parting is None or parting >= len(full.gaps) else full.gaps[parting] < NEAR_TIE
    right = {u.number for u in units if u.topic == probe.topic}
    cites_full, cites_splice = [sorted({int(n) for n in CITATION.findall(run.text)}) for run in (full, splice)]
    return Row(
        probe.question, variant, len(prompt), sum(len(u.tokens) for u in units),
        kl_divergence(full.logits, splice.logits), int(np.argmax(full.logits)) == int(np.argmax(splice.logits)),
        full.answer == splice.answer, parting, near, cites_full, cites_splice,
        bool(right & set(cites_full)), bool(right & set(cites_splice)),
        contains_answer(full.text, probe.answer), contains_answer(splice.text, probe.answer),
        full.seconds, standalone_s, splice.seconds, splice.head_seconds, splice.place_seconds,
        sum(len(s.data) for s in saved),
    )


def probe_question(engine: Engine, chat: GroundedChat, probe: Probe, max_tokens: int,
                   variants=VARIANTS) -> tuple[list[Row], dict]:
    """Every variant on one question; (rows, what the answers said)."""
    turn = chat.prepare([], probe.question, reserve=max_tokens)
    prompt = np.asarray(turn.tokens, dtype=np.int32)
    units = passage_units(engine, turn, prompt)
    full, exact = full_run(engine, prompt, units, max_tokens)
    texts = {"question": probe.question, "full": full.text,
             "units": [(u.number, u.topic, u.start, len(u.tokens), u.unmatched) for u in units]}
    rows = []
    for variant in variants:
        if variant == "exact":
            saved, standalone_s = exact, 0.0
        else:
            numbered = variant == "numbered" or variant.startswith("head")
            saved, standalone_s = standalone_states(engine, units, prompt, variant != "bare", numbered)
        recompute = int(variant[4:]) if variant.startswith("head") else 0
        splice = spliced_run(engine, prompt, saved, max_tokens, recompute)
        rows.append(compare(probe, variant, prompt, units, full, splice, saved, standalone_s))
        texts[variant] = splice.text
    return rows, texts


def rate(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 3) if values else None


def summarise(rows: list[Row]) -> dict:
    summary = {}
    for variant in dict.fromkeys(r.variant for r in rows):
        sel = [r for r in rows if r.variant == variant]
        summary[variant] = {
            "questions": len(sel),
            "mean_kl": round(statistics.mean(r.kl for r in sel), 4),
            "top1_agree": rate(r.top1_agree for r in sel),
            "identical": rate(r.identical for r in sel),
            "identical_or_near_tie": rate(r.identical or bool(r.parting_near_tie) for r in sel),
            "citations_agree": rate(r.cites_full == r.cites_splice for r in sel),
            "right_cite_full": rate(r.right_cite_full for r in sel),
            "right_cite_splice": rate(r.right_cite_splice for r in sel),
            "answered_full": rate(r.answered_full for r in sel),
            "answered_splice": rate(r.answered_splice for r in sel),
            "median_full_s": round(statistics.median(r.full_s for r in sel), 3),
            "median_standalone_s": round(statistics.median(r.standalone_s for r in sel), 3),
            "median_assembly_s": round(statistics.median(r.assembly_s for r in sel), 3),
            "median_head_s": round(statistics.median(r.head_s for r in sel), 3),
            "median_place_ms": round(1000 * statistics.median(r.place_s for r in sel), 2),
            "median_ratio_assembly_full": round(statistics.median(r.assembly_s / r.full_s for r in sel), 3),
            "median_ratio_head_full": round(statistics.median(r.head_s / r.full_s for r in sel), 3),
            "state_bytes_per_token": round(statistics.median(r.state_bytes / r.passage_tokens for r in sel)),
        }
    return summary


def print_row(r: Row) -> None:
    part = "same" if r.parting is None else f"part@{r.parting}{' (near-tie)' if r.parting_near_tie else ''}"
    print(f"  {r.variant:<8} KL {r.kl:8.4f} top1 {'y' if r.top1_agree else 'n'} {part:<20} "
          f"cites {r.cites_full}->{r.cites_splice} full {r.full_s:.2f}s standalone {r.standalone_s:.2f}s "
          f"assembly {r.assembly_s:.2f}s (head {r.head_s:.2f}s, place {1000 * r.place_s:.1f}ms)", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="passage_splice_probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="test")
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--suite", default="quick",
                        help="the bench store's suite (quick: cached, 8 topics), or all-topics (the retrieval "
                             "benchmark's store of every pydoc topic: all 50 labelled questions)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--json", default=None, help="write rows, answers and the summary here")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)} (got {args.variants!r})")
    from sense_local.registry import resolve_model

    engine = Engine(resolve_model(args.model), n_ctx=args.ctx)
    if args.suite == "all-topics":
        topics = all_topics()
        store = pydoc_store(engine, "all-topics", topics)
    else:
        topics = corpus_topics(args.suite)
        store = bench_store(engine, args.suite)
    chat = GroundedChat(engine, store, gate=False)  # 3 passages for every question
    engine.eval(engine.tokenize("A first decode, so no timed one pays for warming up."), 0, with_keys=False)
    rows, answers = [], []
    for probe in probes(topics, args.questions):
        got, texts = probe_question(engine, chat, probe, args.max_tokens, variants)
        print(f"{probe.question}  units {texts['units']}", flush=True)
        for r in got:
            print_row(r)
        rows += got
        answers.append(texts)
    summary = summarise(rows)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "summary": summary,
                                               "rows": [asdict(r) for r in rows], "answers": answers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
