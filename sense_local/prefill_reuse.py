"""Prefill with reuse: evaluate a prompt keeping the KV entries of the longest prefix already
evaluated, in the live sequence or in a conversation set aside (kv_slots.py), in chunks a cancel can
stop between (and, through the cancel hook, within)."""
from __future__ import annotations

import time
import weakref

import numpy as np

from . import native
from .errors import Cancelled
from .kv_disk import disk_states
from .kv_slots import SAVE_MIN, SWITCH_MIN, SavedState, byte_pointer, common_prefix

llama_cpp = native.llama_cpp

# Tokens per decode of a prefill that can be cancelled. The cancel hook stops a decode within
# milliseconds, so chunks are there for the progress a front end shows (and a cancelled prefill keeps
# the chunks it finished): each engine's chunk starts at CANCEL_CHUNK and doubles, up to n_batch,
# while a chunk takes under CHUNK_SECONDS (so a chunk takes at most about twice that). Small chunks
# cost a fast model speed: a 1,500-token prompt, paired with llama-server's (AMD EPYC, 2 cores), on
# the 135M in chunks of 128 / 256 / 512 ran 0.90x / 0.98x / 1.01x its prompt tok/s (one decode:
# 0.99x); on the Intel VM (half the speed) the quick suite's 273-443-token prompts, 6 paired reps,
# ran 0.84x / 0.85x / 1.00x (median of 7), and its 256-token chunks took ~0.8 s, so growing only
# under half a second kept them there. The 1.5B's 128-token chunks take ~1-1.4 s and stay.
CANCEL_CHUNK = 128
CHUNK_SECONDS = 1.0
_chunks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> its prefill chunk


def prefill(engine, prompt, *, outputs: str = "last", with_keys: bool = False, cancel=None, progress=None):
    """Engine.prefill (see there): an EvalOutput whose `reused` says how many tokens were kept."""
    prompt = np.asarray(prompt, dtype=np.int32)
    if len(prompt) == 0:
        raise ValueError("empty prompt")
    if outputs == "all":
        return engine.eval(prompt, 0, outputs="all", with_keys=with_keys)
    reuse = _resume(engine, prompt[:-1], with_keys)
    out = _prefill_from(engine, prompt, reuse, outputs, with_keys, cancel, progress)
    out.reused = reuse
    return out


def _resume(engine, head: np.ndarray, with_keys: bool) -> int:
    """How many tokens of `head` (a prompt but its last token) are already evaluated: the live
    conversation's, or a saved one's brought back when it holds more (kv_slots.py: in RAM; else
    kv_disk.py: kept by an earlier run); the live one is saved first when the prompt would throw
    much of it away."""
    reuse = common_prefix(engine.tokens, head)
    if with_keys:  # positions cached without their key states are evaluated again
        reuse = min(reuse, engine.keys.valid)
    saved, match = engine.slots.best(head, keys=with_keys)
    disk = disk_states(engine)
    kept, kept_match = disk.best(head, keys=with_keys) if disk is not None else (None, 0)
    from_disk = kept is not None and kept_match >= max(reuse, match) + SWITCH_MIN
    switch = saved is not None and match >= reuse + SWITCH_MIN
    if switch or from_disk or engine.n_past - reuse >= SAVE_MIN:
        _save_live(engine)
    if from_disk:
        state = disk.load(kept)
        if state is not None and _restore(engine, state):
            return min(kept_match, engine.n_past)
        disk.forget(kept)  # unreadable, or refused by llama.cpp: evaluated as if never kept
        return 0
    if switch:
        return match if _restore(engine, saved) else 0
    return reuse


def _live_state(engine) -> SavedState | None:
    """The live conversation's state (a copy), or None where llama.cpp would not give it."""
    size = llama_cpp.llama_state_seq_get_size(engine._ctx, 0)
    data = np.empty(size, np.uint8)  # a ctypes array of the 1.5B's 1,500 tokens (43 MB) took 30-160 ms to make
    if llama_cpp.llama_state_seq_get_data(engine._ctx, byte_pointer(data), size, 0) != size:
        return None
    keys = engine.keys.copy()
    return SavedState(list(engine.tokens), data, keys if keys is not None else engine._no_keys)


def _save_live(engine) -> None:
    """Set the live conversation's state aside in `slots` (when it has one worth keeping)."""
    if engine.n_past < SAVE_MIN or engine.slots.cap_bytes <= 0:
        return
    state = _live_state(engine)
    if state is not None:
        engine.slots.add(state)


def keep_on_disk(engine) -> None:
    """Write the live conversation to disk (kv_disk.py), to be resumed in a later run (when the
    engine keeps conversations there and this one is worth keeping)."""
    disk = disk_states(engine)
    if disk is None or engine.n_past < SAVE_MIN:
        return
    state = _live_state(engine)
    if state is not None:
        disk.keep(state)


def _restore(engine, saved: SavedState) -> bool:
    """Make `saved` the live conversation; False (and nothing held) if llama.cpp refused it."""
    engine.slots.take(saved)
    llama_cpp.llama_memory_seq_rm(engine._mem, 0, -1, -1)
    engine.tokens.clear()
    engine.keys.truncate(0)
    if llama_cpp.llama_state_seq_set_data(engine._ctx, byte_pointer(saved.data), len(saved.data), 0) != len(saved.data):
        llama_cpp.llama_memory_seq_rm(engine._mem, 0, -1, -1)
        return False
    engine.tokens.extend(saved.tokens)
    if len(saved.keys):
        engine.keys.write(0, saved.keys)
    return True


def _prefill_from(engine, prompt: np.ndarray, reuse: int, outputs: str, with_keys: bool, cancel, progress):
    """The prompt from `reuse` on; with `cancel`, in chunks (see CANCEL_CHUNK), each followed by
    progress(tokens evaluated or reused, prompt length) when given (and once before the first:
    a front end can say the prompt is being read before a chunk takes its second)."""
    if cancel is None or outputs != "last":
        return engine.eval(prompt[reuse:], reuse, outputs=outputs, with_keys=with_keys)
    chunk = prefill_chunk(engine)
    if progress is not None and len(prompt) - reuse > chunk:
        progress(reuse, len(prompt))
    with engine.cancellable(cancel):
        while len(prompt) - reuse > chunk:
            if cancel.is_set():
                raise Cancelled("prefill cancelled")
            began = time.perf_counter()
            engine.eval(prompt[reuse : reuse + chunk], reuse, outputs="last", with_keys=with_keys)
            reuse += chunk
            if time.perf_counter() - began < CHUNK_SECONDS and chunk < engine.n_batch:
                chunk = _chunks[engine] = min(2 * chunk, engine.n_batch)
            if progress is not None:
                progress(reuse, len(prompt))
        if cancel.is_set():
            raise Cancelled("prefill cancelled")
        return engine.eval(prompt[reuse:], reuse, outputs=outputs, with_keys=with_keys)


def prefill_chunk(engine) -> int:
    """Tokens per decode of this engine's next cancellable prefill (see CANCEL_CHUNK)."""
    return _chunks.get(engine, min(CANCEL_CHUNK, engine.n_batch))
