"""The model's weights a second time, in the file's own layout, where a prompt reads faster.

On a CPU llama.cpp repacks Q4_0, Q4_K and IQ4_NL weights (Q2_K with AVX-512) into interleaved rows
(its CPU_REPACK buffers): one-token decodes get faster, and on some CPUs long decodes get slower. On
the 2-core AMD EPYC here the 1.5B Q4_K_M decodes one token in 24-26 ms repacked, 32-33 ms plain, and
reads a 1,500-token prompt at 156 tok/s repacked, 233 plain (1.5x); llama-server repacks too. So an
engine whose measured verdict (`measure`, kept beside the cost curve) says the plain layout reads
prompts at least GAIN times faster loads the GGUF once more with repacking off (memory-mapped: 0.3 s,
pages shared with the file's) with a context of its own, and a decode of PLAIN_MIN tokens or more that
wants one row of logits (a prompt, a passage, a new turn), or of ALL_MIN or more that wants them all
(a long draft verified), runs there: the conversation's KV entries are copied in where that context
lacks them and back after (`llama_state_seq_get_data` / `set_data`: 2-3 ms each way for 1,500 tokens
of the 1.5B). The 1.5B's cost curve at 512 tokens of context, copies included, alternated in one
process: c(32) 9.5 -> 8.4, c(48) 13.6 -> 10.8, c(64) 16.5 -> 11.9 (18.4 -> 13.9 in a second pair);
c(16) and shorter the same, so those stay on the repacked weights. Same model, other kernels: a greedy reply
after either prefill parts from the other's only at near-ties (top-2 gap 0.15 on a README summary).
`SENSE_PLAIN_LAYOUT=0` never loads it, `=1` always does (tests; a model nothing is repacked for).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from . import native
from .chunked_eval import ContextHolder
from .errors import ModelError, SenseError
from .key_source import KeySource
from .kv_slots import byte_pointer, common_prefix
from .model_load import load_model
from .token_batch import TokenBatch, context_params

llama_cpp = native.llama_cpp
PLAIN_MIN = 64  # tokens a decode needs to run on the plain layout (one of 32 already costs less there)
GAIN = 1.1  # the plain layout is used where it read the probe at least this much faster
PROBE_TOKENS = 256  # what the verdict times, on each layout (the quickest of PROBE_REPS)
PROBE_REPS = 3
MEMORY_MARGIN = 512 << 20  # free memory wanted beyond the file's size before a second copy is mapped
ALL_MIN: int | None = 32  # decodes wanting every row's logits (a draft verified) this long run there too (None: never)


def runs_there(k: int, outputs: str) -> bool:
    """Does a decode of k tokens wanting `outputs` (engine.eval's) run on the plain layout, where there is one?"""
    if outputs == "all":
        return ALL_MIN is not None and k >= ALL_MIN
    return k >= PLAIN_MIN


class PlainLayout(ContextHolder):
    """A context on the plain-layout weights whose sequence 0 mirrors a start of the engine's."""

    def __init__(self, engine):
        self.model, _ = load_model(engine.path, (), 0, repack=False)
        try:
            self.key_source = KeySource.make(engine.key_layer, engine.n_embd, engine.n_batch, tapped=True,
                                             model_path=engine.path)
        except ModelError:
            llama_cpp.llama_model_free(self.model)
            raise
        self._ctx, self._batch = None, None
        try:
            cparams = context_params(n_ctx=engine.n_ctx, n_batch=engine.n_batch, n_threads=engine.n_threads)
            cparams.n_seq_max = 1
            if engine._flash_attn is not None:
                cparams.flash_attn_type = 1 if engine._flash_attn else 0
            self.key_source.configure(cparams)
            self._ctx = llama_cpp.llama_init_from_model(self.model, cparams)
            if not self._ctx:
                raise ModelError(f"{engine.path}: llama.cpp could not create a context on the plain layout")
            self._mem = llama_cpp.llama_get_memory(self._ctx)
            self._batch = TokenBatch(engine.n_batch)
        except BaseException:
            self.close()  # nothing half-made stays behind
            raise
        self._cancel = engine._cancel  # a cancel stops a decode here as on the engine's context
        self.n_vocab, self.n_embd = engine.n_vocab, engine.n_embd
        self._no_keys = engine._no_keys  # [0, n_embd]
        self.tokens: list[int] = []  # what sequence 0 holds here
        self._state = np.empty(0, np.uint8)  # a sequence's state on its way between the contexts

    def take(self, engine, start: int) -> bool:
        """Hold the engine's first `start` tokens (all its context holds), copying its KV entries
        over unless they are here already; False where llama.cpp would not (nothing held then)."""
        if common_prefix(self.tokens, np.asarray(engine.tokens[:start], np.int32)) == start:
            llama_cpp.llama_memory_seq_rm(self._mem, 0, start, -1)
            del self.tokens[start:]
            return True
        self.tokens = []
        try:
            self._copy(engine._ctx, self._ctx, self._mem)
        except RuntimeError:
            return False
        self.tokens = list(engine.tokens[:start])
        return True

    def give(self, engine) -> None:
        """The engine's context gets this one's sequence (the tokens just decoded here included)."""
        try:
            self._copy(self._ctx, engine._ctx, engine._mem)
        except RuntimeError:
            engine.truncate(0)  # its sequence is gone: the next prompt is read whole (saved ones stay)
            raise
        self.tokens = list(engine.tokens)

    def _copy(self, source, target, target_mem) -> None:
        size = llama_cpp.llama_state_seq_get_size(source, 0)
        if len(self._state) < size:
            self._state = np.empty(size, np.uint8)  # not a ctypes array: making one of 43 MB takes 0.12 s
        data = byte_pointer(self._state)
        if llama_cpp.llama_state_seq_get_data(source, data, size, 0) != size:
            raise RuntimeError("llama.cpp did not give a sequence's state")
        llama_cpp.llama_memory_seq_rm(target_mem, 0, -1, -1)
        if llama_cpp.llama_state_seq_set_data(target, data, size, 0) != size:
            llama_cpp.llama_memory_seq_rm(target_mem, 0, -1, -1)
            raise RuntimeError("llama.cpp refused a sequence's state from the plain layout")

    def close(self) -> None:
        if getattr(self, "_batch", None) is not None:
            self._batch.free()
            self._batch = None
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "model", None):
            llama_cpp.llama_model_free(self.model)
            self.model = None


def open_for(engine) -> PlainLayout | None:
    """The engine's plain layout, where it is wanted and can be had: a CPU-only engine whose verdict
    says it reads prompts GAIN x faster, with memory for the second mapping (None otherwise)."""
    forced = os.environ.get("SENSE_PLAIN_LAYOUT")
    if forced == "0" or engine.n_gpu_layers != 0 or engine.placement is not None:
        return None
    if forced != "1":
        found = verdict(engine)
        if found is None or found < GAIN or not _memory_for(engine):
            return None
    try:
        return PlainLayout(engine)
    except (ModelError, SenseError):
        return None


def verdict(engine) -> float | None:
    """Prompt speed on the plain layout over the repacked one, as measured here before (None: never)."""
    try:
        return float(json.loads(_verdict_file(engine).read_text())["plain_over_repacked"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def measure(engine) -> dict | None:
    """Time PROBE_TOKENS-token decodes on the engine's context and on a plain layout, alternating
    (the quickest of PROBE_REPS each), keep their ratio as this model's verdict here and return what
    was measured (None for an engine with layers off the CPU, where nothing is repacked, or without
    the memory for a second copy). The engine's committed tokens are left as they were."""
    if engine.n_gpu_layers != 0 or engine.placement is not None or engine.n_past + PROBE_TOKENS > engine.n_ctx:
        return None  # nothing repacked off the CPU (or no room in the context to time it): no verdict
    engine.forget_plain_layout()  # one second copy at a time
    if not _memory_for(engine):
        return None
    plain = PlainLayout(engine)
    try:
        rng = np.random.default_rng(0)
        filler = rng.integers(100, min(engine.n_vocab, 20000), size=PROBE_TOKENS).astype(np.int32)
        base = engine.n_past
        engine.key_source.switch(engine._ctx, False)
        plain.key_source.switch(plain._ctx, False)
        times = {"repacked": [], "plain": []}
        for _ in range(PROBE_REPS):
            times["repacked"].append(_timed_decode(engine, filler, base))
            times["plain"].append(_timed_decode(plain, filler, 0))
    finally:
        plain.close()
    speeds = {name: PROBE_TOKENS / min(t) for name, t in times.items()}
    found = {"plain_over_repacked": round(speeds["plain"] / speeds["repacked"], 3),
             "plain_tok_s": round(speeds["plain"], 1), "repacked_tok_s": round(speeds["repacked"], 1)}
    path = _verdict_file(engine)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(found))
    os.replace(tmp, path)  # a server reading it never sees half a file
    engine.forget_plain_layout()
    engine.plain_layout()  # opened again, or not, by the new verdict
    return found


def describe(found: dict | None) -> str:
    """One line on a verdict: how fast each layout read the probe, and whether prompts use the plain one."""
    if found is None:
        return "prompt reading: one weight layout (layers off the CPU, or no memory for a second copy)"
    ratio = found["plain_over_repacked"]
    use = f"used for runs of {PLAIN_MIN}+ tokens" if ratio >= GAIN else f"not used (under {GAIN}x)"
    return (f"prompt reading: {found['plain_tok_s']:.0f} tok/s on the weights' plain layout, "
            f"{found['repacked_tok_s']:.0f} repacked ({ratio:.2f}x): {use}")


def _timed_decode(holder, tokens: np.ndarray, start: int) -> float:
    batch = holder._batch
    n = min(len(tokens), batch.token.shape[0])
    batch.fill(tokens[:n], start)
    batch.logits[:n] = 0
    batch.logits[n - 1] = 1
    began = time.perf_counter()
    rc = llama_cpp.llama_decode(holder._ctx, batch.raw)
    took = time.perf_counter() - began
    llama_cpp.llama_memory_seq_rm(holder._mem, 0, start, -1)
    if rc != 0:
        raise RuntimeError(f"llama_decode failed with code {rc}")
    return took * len(tokens) / n


def _verdict_file(engine):
    from .speculative import cost

    curve = cost._cache_file(engine)  # the same key: model, threads, GPU layers, llama.cpp version
    return curve.with_name(curve.stem + "-layout.json")


def _memory_for(engine) -> bool:
    """Is there memory for the file mapped a second time, a second KV cache (f16 keys and values of
    n_ctx tokens: 117 MB for the 1.5B at 4,096) and the buffer a state is copied through, by
    MemAvailable (True where unknown)?"""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return True
    model = engine._model
    n_head, n_head_kv = llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model)
    kv_row = engine.n_embd * n_head_kv // max(1, n_head)  # keys (or values) per token and layer
    kv_bytes = engine.n_ctx * engine.n_layer * 2 * kv_row * 2  # and as much again for the copy buffer
    return available >= engine.path.stat().st_size + 2 * kv_bytes + MEMORY_MARGIN
