"""Peer baselines measured in the same run: llama-cpp-python's own high-level API."""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class PeerResult:
    tokens: list[int]
    text: str
    seconds: float  # time from the first token to the last (the prefill and first token excluded)
    error: str | None = None
    wall: float = 0.0  # the whole call, prefill included
    prompt_tok_per_s: float = 0.0  # prefill speed, where the peer reports it (llama-server's timings)
    prompt_n: int = 0  # prompt tokens it evaluated (the rest came from its cache)
    drafted: int = 0  # draft tokens it verified, where it reports them
    accepted: int = 0
    forwards: int = 0  # target decodes, where known (0: not reported)

    @property
    def tok_per_s(self) -> float:
        n = len(self.tokens) - 1
        return n / self.seconds if n > 0 and self.seconds > 0 and not self.error else 0.0


class LlamaCppPeer:
    """`Llama.create_completion(temperature=0)`, optionally with `LlamaPromptLookupDecoding`."""

    def __init__(
        self, model_path, *, n_ctx: int, n_threads: int | None, n_gpu_layers: int = 0, lookup: bool = False
    ):
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.name = "peer-llamacpp-pld" if lookup else "peer-llamacpp"
        self.llm = Llama(
            str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,  # None: llama-cpp-python's own default (half the cores)
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10) if lookup else None,
            verbose=False,
        )

    def run(self, prompt: list[int], max_tokens: int, *, fresh: bool = False) -> PeerResult:
        """fresh=True drops the peer's cached prompt first (end-to-end timing)."""
        if fresh:
            self.llm.reset()
            self.llm._ctx.kv_cache_clear()
        pieces: list[str] = []
        t_first = None
        t0 = time.perf_counter()
        try:
            for chunk in self.llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=0.0, stream=True
            ):
                if t_first is None:
                    t_first = time.perf_counter()
                pieces.append(chunk["choices"][0]["text"])
        except Exception as exc:  # the peer's own failures are results, not crashes of ours
            return PeerResult([], "", time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        t_end = time.perf_counter()
        text = "".join(pieces)
        # streamed chunks may hold several tokens (held-back UTF-8): count the text's real tokens
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []
        return PeerResult(ids, text, t_end - (t_first or t0), wall=t_end - t0)
