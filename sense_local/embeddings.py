"""Sentence embeddings from a second, small llama.cpp model (what /v1/embeddings serves).

The model is an embedding model proper (by default all-MiniLM-L6-v2, see models/registry.json's
`embedding` role), not the chat model: its context pools each input as the model defines it
(`pooling_type` from the GGUF: mean for MiniLM), and `llama_get_embeddings_seq` returns one vector
per input, which we L2-normalize. Several inputs share one decode, each in its own sequence, as
many as fit the batch. An input longer than the model's context keeps its first tokens and its
closing separator (sentence-transformers cuts the same way); callers learn which were cut.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import native
from .errors import ModelError
from .model_info import check_readable_gguf
from .token_batch import TokenBatch, context_params, tokenize

llama_cpp = native.llama_cpp

MAX_SEQS = 32  # inputs evaluated together in one decode (each a sequence of its own)


@dataclass
class Embedded:
    vectors: np.ndarray  # [n, dim] float32, each of unit length
    tokens: int  # tokens evaluated, the model's special tokens included
    truncated: list[int]  # indices of the inputs cut to fit the model's context


class Embedder:
    """A loaded embedding model. `embed` is thread-safe (one context, one caller at a time)."""

    def __init__(self, model_path: str | os.PathLike, *, n_threads: int | None = None, name: str | None = None):
        from .engine import default_threads

        self.path = Path(model_path)
        self.name = name or self.path.stem
        check_readable_gguf(self.path)
        native.ensure_backend()
        self._lock = threading.Lock()
        self._ctx = None
        self._batch = None
        mparams = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise ModelError(f"{self.path}: llama.cpp could not load this embedding model")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.dim = llama_cpp.llama_model_n_embd_out(self._model)
        self.n_ctx = llama_cpp.llama_model_n_ctx_train(self._model) or 512
        cparams = context_params(n_ctx=self.n_ctx, n_batch=self.n_ctx, n_threads=n_threads or default_threads())
        cparams.n_seq_max = MAX_SEQS
        cparams.embeddings = True
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED  # as the model defines
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise ModelError(f"{self.path}: llama.cpp could not create an embedding context (n_ctx={self.n_ctx})")
        self.pooling = llama_cpp.llama_pooling_type(self._ctx)
        if self.pooling in (llama_cpp.LLAMA_POOLING_TYPE_NONE, llama_cpp.LLAMA_POOLING_TYPE_RANK):
            self.close()
            raise ModelError(f"{self.path}: not a sentence-embedding model (its GGUF defines no pooling)")
        self._mem = llama_cpp.llama_get_memory(self._ctx)  # None for an encoder such as BERT
        self._batch = TokenBatch(self.n_ctx, max_seqs=1)
        self._batch.logits[:] = 1  # every row feeds the pooling
        self.bos = llama_cpp.llama_vocab_bos(self._vocab) if llama_cpp.llama_vocab_get_add_bos(self._vocab) else -1
        closing = [(llama_cpp.llama_vocab_get_add_eos, llama_cpp.llama_vocab_eos),
                   (llama_cpp.llama_vocab_get_add_sep, llama_cpp.llama_vocab_sep)]
        self.closing = [int(tok(self._vocab)) for add, tok in closing if add(self._vocab)]  # appended after the text

    # ------------------------------------------------------------------ input
    def tokenize(self, text: str) -> list[int]:
        """The model's tokens of `text`, its special tokens (e.g. [CLS] ... [SEP]) added."""
        return tokenize(self._vocab, text, True, False)

    def wrap(self, tokens: list[int]) -> list[int]:
        """Token ids a client sent, with the special tokens the model's tokenizer would add, where missing."""
        tokens = list(tokens)
        if self.bos >= 0 and tokens[:1] != [self.bos]:
            tokens.insert(0, self.bos)
        if self.closing and tokens[-len(self.closing):] != self.closing:
            tokens += self.closing
        return tokens

    def _fit(self, tokens: list[int]) -> tuple[list[int], bool]:
        if len(tokens) <= self.n_ctx:
            return tokens, False
        tail = self.closing if tokens[-len(self.closing):] == self.closing else []
        return tokens[: self.n_ctx - len(tail)] + tail, True

    # ------------------------------------------------------------------ embedding
    def embed(self, inputs: list[list[int]]) -> Embedded:
        """Unit-length embeddings of token lists (from `tokenize` or `wrap`), in input order."""
        fitted = [self._fit(t) for t in inputs]
        out = np.empty((len(inputs), self.dim), np.float32)
        with self._lock:
            group: list[int] = []
            used = 0
            for i, (tokens, _) in enumerate(fitted):
                if group and (used + len(tokens) > self.n_ctx or len(group) == MAX_SEQS):
                    self._run([fitted[j][0] for j in group], out, group)
                    group, used = [], 0
                group.append(i)
                used += len(tokens)
            if group:
                self._run([fitted[j][0] for j in group], out, group)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out /= np.maximum(norms, 1e-12)
        return Embedded(out, sum(len(t) for t, _ in fitted), [i for i, (_, cut) in enumerate(fitted) if cut])

    def _run(self, seqs: list[list[int]], out: np.ndarray, rows: list[int]) -> None:
        """One decode of up to MAX_SEQS token lists, each a sequence from position 0; pooled rows into out."""
        b = self._batch
        k = 0
        for s, tokens in enumerate(seqs):
            m = len(tokens)
            b.token[k : k + m] = tokens
            b.pos[k : k + m] = np.arange(m, dtype=np.int32)
            for i in range(k, k + m):
                b.raw.seq_id[i][0] = s
            k += m
        b.raw.n_tokens = k
        if self._mem:
            llama_cpp.llama_memory_clear(self._mem, True)
        rc = llama_cpp.llama_decode(self._ctx, b.raw)
        if rc != 0:
            raise ModelError(f"{self.path}: llama_decode failed ({rc}) on {len(seqs)} inputs of {k} tokens")
        for s, row in enumerate(rows):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, s)
            if not ptr:
                raise ModelError(f"{self.path}: llama.cpp returned no pooled embedding for input {row}")
            out[row] = np.ctypeslib.as_array(ptr, shape=(self.dim,))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._batch is not None:
            self._batch.free()
            self._batch = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class LazyEmbedder:
    """The server's embedding model: resolved at start, loaded on the first request, then kept."""

    def __init__(self, model: str | None = None):
        self.model = model  # a registry name, path or found model (registry.resolve_model); None: the `embedding` role
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def get(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from .registry import load_registry, resolve_model

                given = self.model or "embedding"
                path = resolve_model(given)
                # its id in responses: the registry name, a file's stem, or the name it was found by (ollama:...)
                name = load_registry().name_of(given) or (path.stem if Path(given).expanduser().exists() else given)
                self._embedder = Embedder(path, name=name)
            return self._embedder

    def close(self) -> None:
        with self._lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None
