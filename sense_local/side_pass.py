"""Side passes: key states of a token run evaluated on its own (a question's, for retrieval),
leaving the engine's conversation, its KV cache and committed tokens, as they are."""
from __future__ import annotations

import numpy as np

from . import native
from .errors import ContextOverflowError

llama_cpp = native.llama_cpp
SCRATCH_SEQ = 1  # the engine's sequence for side evaluations


def side_keys(engine, tokens) -> np.ndarray:
    """[k, n_embd] key states of `tokens` at positions 0..k-1 (at most n_batch of them): block keys
    through the engine's hidden pass, which stops after the key block (the 1.5B's question pass:
    0.1 s instead of 0.35 s for the whole model and its LM head on every row), else in the engine's
    scratch sequence."""
    tokens = np.asarray(tokens, dtype=np.int32)[: engine.n_batch]
    k = len(tokens)
    fast = engine.hidden_pass(engine.n_batch) if engine.key_layer is not None else None
    if fast is not None:
        return fast.run(tokens)
    if engine.n_past + k > engine.n_ctx:
        raise ContextOverflowError(f"context full: no room for a {k}-token side evaluation")
    if engine.key_source.tap is None:  # a context with no tap yet: made with one (the committed tokens come back)
        engine._want_keys()
    engine.key_source.switch(engine._ctx, True)
    batch = engine._batch
    batch.fill(tokens, 0)
    batch.logits[:k] = 1
    batch.assign_sequence(k, SCRATCH_SEQ)
    try:
        rc = engine._decode(batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")
        return np.array(engine._views(k, k).keys)
    finally:
        batch.assign_sequence(k, 0)
        llama_cpp.llama_memory_seq_rm(engine._mem, SCRATCH_SEQ, -1, -1)


def hidden_pass(engine, n_ctx: int):
    """The engine's second context for key states of long runs (indexing) at plain-prefill speed,
    made on first use and kept (a longer n_ctx makes a new one); None where llama.cpp's graph
    callback cannot provide it."""
    from .hidden_pass import HiddenPass

    held = engine._hidden_pass
    if held is None or held.n_ctx < n_ctx:
        if held is not None:
            held.close()
        plain = engine.plain_layout()  # long runs read faster there, where the engine has one
        held = engine._hidden_pass = HiddenPass(
            plain.model if plain is not None else engine._model, engine.n_embd, n_ctx=n_ctx, n_batch=engine.n_batch, n_threads=engine.n_threads,
            layer=engine.key_layer,
        )
    return held if held.available else None
