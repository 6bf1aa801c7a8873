"""The target model: one llama.cpp context that returns logits *and* hidden states.

A single `llama_decode` of k tokens yields per-position logits [k, n_vocab] and hidden states
[k, n_embd], the keys SENSE searches with. By default they are the final hidden states (after the
output norm, before the LM head), which llama.cpp returns as embeddings (pooling NONE). With a
`key_layer` l they are block l's normalized input, read from the running graph (key_tap.py), so
a store indexed on them costs only l of the model's blocks per token. Both are exposed as zero-copy
numpy views into llama.cpp's or the tap's buffers: they are valid until the next `eval`, so callers
copy what they keep.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import native
from .errors import Cancelled, ContextOverflowError, ModelError, SenseError
from .hidden_pass import HiddenPass
from .key_tap import KeyTap, native_callback, taps_available
from .kv_slots import DEFAULT_MIB, SAVE_MIN, SWITCH_MIN, KvSlots, SavedState, common_prefix
from .model_info import check_readable_gguf, read_model_info
from .token_batch import TokenBatch, context_params, tokenize

llama_cpp = native.llama_cpp


@dataclass
class EvalOutput:
    logits: np.ndarray  # [k, n_vocab] float32, view valid until the next eval
    hidden: np.ndarray  # [k, n_embd] float32, view valid until the next eval
    reused: int = 0  # prefill: prompt tokens whose KV entries were kept, not evaluated again


# Tokens per decode of a prefill that can be cancelled: ~2 s on the 1.5B here (64 tok/s), ~0.4 s on
# the 135M; a 512-token decode would keep Esc waiting ~8 s on the 1.5B. Measured on a 738-token
# prompt (1.5B): 64-token decodes made the prefill ~10% slower, 128 and 256 were level with one decode.
CANCEL_CHUNK = 128
TREE_SEQ0 = 2  # the first sequence id of a tree draft's branches
MAX_BRANCHES = 8  # leaves a tree draft may have
MAX_TREE = 64  # nodes a tree draft may have


@dataclass
class _PendingTree:
    start: int  # position of the tree's root (the last chosen token)
    branch_of: list[int]  # [n] a sequence id holding each node
    n_branches: int


# Where SENSE's keys are read by default, as a fraction of the model's blocks (None: the final norm).
# Measured on Qwen2.5-Coder-1.5B (benchmarks/key_layer_bench.py, bench --key-layer): block 8 of 28
# costs 0.28x of a prefill to index (the final norm 0.99x), with SENSE's quick-suite tau unchanged
# (grounded 5.52 vs 5.53, docqa-rag 2.11 vs 2.11); next-token agreement of neighbours is lower
# (0.53 vs 0.64), but the drafts built on them are not.
KEY_DEPTH = 0.3


def default_key_layer(n_layer: int) -> int | None:
    """The block whose input states key SENSE's search by default (None: the final norm, also where
    graph tensors cannot be read)."""
    if KEY_DEPTH is None or n_layer < 2 or not taps_available():
        return None
    return min(max(1, round(KEY_DEPTH * n_layer)), n_layer - 1)


def parse_key_layer(text: str) -> int | None | str:
    """A --key-layer value: a block number, "final", or "default"."""
    if text in ("final", "default"):
        return None if text == "final" else "default"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"a block number, final or default (got {text!r})") from None


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class FimTokens:
    """The model's fill-in-the-middle tokens (-1: the model has none): prefix, suffix and middle
    markers, and the repository / file separators of the repo-level layout (fim.py)."""

    pre: int
    suf: int
    mid: int
    rep: int
    sep: int

    @property
    def usable(self) -> bool:
        return min(self.pre, self.suf, self.mid) >= 0


class Engine:
    """A loaded GGUF model with one sequence of committed tokens in its KV cache."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        flash_attn: bool | None = None,
        key_layer: int | None | str = "default",
        slot_mib: int = DEFAULT_MIB,
        rpc: str | tuple[str, ...] = (),
    ):
        self.path = Path(model_path)
        check_readable_gguf(self.path)
        native.ensure_backend()
        native.limit_blas_threads()
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        # --rpc: layers on other machines' llama.cpp workers (rpc.py); the devices array must outlive the load
        self.placement = self._place_on_workers(rpc, n_gpu_layers) if rpc else None
        held = self.placement.apply(mparams) if self.placement else None
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        del held
        if not self._model:
            if self.placement:
                raise ModelError(f"{self.path}: llama.cpp could not load the model across the RPC workers "
                                 f"({self.placement.describe()})")
            if native.USEARCH_WAS_FIRST:
                raise ModelError(
                    f"{self.path}: llama.cpp could not load the model because usearch was imported before "
                    "sense_local (a libstdc++ clash); import sense_local first"
                )
            raise ModelError(f"{self.path}: llama.cpp could not load this model (unsupported or damaged GGUF)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        self.n_ctx = min(n_ctx, n_ctx_train) if n_ctx_train > 0 else n_ctx
        self.n_batch = min(n_batch, self.n_ctx)

        self.n_layer = llama_cpp.llama_model_n_layer(self._model)
        self._flash_attn = flash_attn
        self.key_layer: int | None = None  # whose states `hidden` outputs are: None the final norm, l block l's input
        self._tap: KeyTap | None = None  # reads block key_layer's input during every decode
        self._ctx = None
        self._abort_event = None  # a cancel event multi-token decodes poll (see `cancellable`)
        self._abort_hook = llama_cpp.ggml_abort_callback(self._abort_requested)
        self._make_context(self.resolve_key_layer(key_layer))

        self._batch = TokenBatch(self.n_batch)  # one reusable batch, filled through numpy views
        self._tree_batch: TokenBatch | None = None  # made on the first tree draft
        self._pending_tree: _PendingTree | None = None  # a tree evaluated, its path not yet kept
        self._hidden_pass: HiddenPass | None = None  # made by hidden_pass() on first use
        self._no_hidden = np.zeros((0, self.n_embd), dtype=np.float32)  # [0, n_embd]
        self._hidden_cache: np.ndarray | None = None  # [n_ctx, n_embd] hidden state of each committed position
        self._hidden_valid = 0  # positions [0, _hidden_valid) of the cache are current
        self.slots = KvSlots(slot_mib << 20)  # states of conversations set aside (kv_slots.py)
        self.tokens: list[int] = []  # committed tokens in the KV cache (len == n_past)
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self.bos_id = llama_cpp.llama_vocab_bos(self._vocab)
        self.eos_id = llama_cpp.llama_vocab_eos(self._vocab)
        self._is_eog = np.zeros(self.n_vocab, dtype=bool)  # [n_vocab]
        self._is_special = np.zeros(self.n_vocab, dtype=bool)  # [n_vocab] control/EOG tokens
        for t in range(self.n_vocab):
            if llama_cpp.llama_vocab_is_eog(self._vocab, t):
                self._is_eog[t] = True
                self._is_special[t] = True
            elif llama_cpp.llama_vocab_is_control(self._vocab, t):
                self._is_special[t] = True
        self.fim = FimTokens(*(int(getattr(llama_cpp, f"llama_vocab_fim_{k}")(self._vocab))
                               for k in ("pre", "suf", "mid", "rep", "sep")))
        for t in (self.fim.pre, self.fim.suf, self.fim.mid):  # a FIM marker in the output: the middle is done
            if t >= 0:
                self._is_eog[t] = self._is_special[t] = True

    def _place_on_workers(self, rpc, gpu_layers: int):
        from .rpc import place_on_workers

        return place_on_workers(rpc, read_model_info(self.path).n_layer, gpu_layers)

    @property
    def rpc_workers(self) -> tuple[str, ...]:
        """HOST:PORT of each worker holding layers of this model (none: all local)."""
        return tuple(dict.fromkeys(str(d.endpoint) for d in self.placement.devices)) if self.placement else ()

    def _make_context(self, key_layer: int | None, *, tapped: bool = False) -> None:
        """(Re)create the llama.cpp context, whose hidden states are read at `key_layer`: for a block,
        through a tap on the graph, switched on only for decodes that want key states. The C tap
        costs nothing switched off, so every block-keyed context gets it; the Python one (no C
        compiler here) costs a call per graph node even then (~10% of a 135M decode, ~4% of a 1.5B
        one), so only contexts asked for hidden states (`tapped`) get that one."""
        if key_layer is not None and not 0 < key_layer < self.n_layer:
            raise SenseError(f"key layer {key_layer} is not a block of this model (1..{self.n_layer - 1}, or final)")
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        tap = None
        if key_layer is not None and (tapped or native_callback() is not None):
            tap = KeyTap(key_layer, self.n_embd, max(self.n_batch, MAX_TREE + 1), stop=False)
            tap.enabled = False  # on for the decodes that want key states (`_use_embeddings`)
        if tap is not None and not tap.usable:
            raise ModelError(f"{self.path}: no ggml library to read block {key_layer}'s states from")
        cparams = context_params(n_ctx=self.n_ctx, n_batch=self.n_batch, n_threads=self.n_threads)
        # Sequence 0 holds the conversation; sequence 1 is scratch space for side evaluations
        # (`side_hidden`) that must not disturb it; sequences 2.. hold the branches of a tree draft
        # while it is verified (`eval_tree`). One unified KV buffer serves them all (measured: no
        # change in decode or verify speed against a single-sequence context).
        cparams.n_seq_max = TREE_SEQ0 + MAX_BRANCHES
        cparams.kv_unified = True
        if self._flash_attn is not None:  # None: llama.cpp decides (AUTO)
            cparams.flash_attn_type = 1 if self._flash_attn else 0
        # Final-norm keys come as llama.cpp's embeddings (switched on when wanted); block keys come
        # from the tap, every row of every decode, with embeddings off (the LM head runs on the
        # output rows only).
        cparams.embeddings = key_layer is None
        cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        if tap is not None:
            tap.install(cparams)
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise ModelError(f"{self.path}: llama.cpp could not create a context (n_ctx={self.n_ctx})")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        if hasattr(self, "slots"):
            self.slots.clear()  # their hidden states were read at the old key layer
        self._embeddings_on = key_layer is None
        self.key_layer, self._tap = key_layer, tap
        self._tap_used = False  # no decode has asked this context for key states yet

    def resolve_key_layer(self, key_layer: int | None | str) -> int | None:
        """A key layer as given (a block, None: the final norm, or "default") as a block or None."""
        return default_key_layer(self.n_layer) if key_layer == "default" else key_layer

    def use_key_layer(self, key_layer: int | None | str) -> None:
        """Read hidden states at `key_layer` from now on (a store keyed there is in use). A change
        makes a new context: the committed tokens are dropped, as by `reset`."""
        key_layer = self.resolve_key_layer(key_layer)
        if key_layer == self.key_layer:
            return
        self._make_context(key_layer)
        self.reset()
        if self._hidden_pass is not None:
            self._hidden_pass.close()
            self._hidden_pass = None

    def _want_hidden(self) -> None:
        """Before a decode that returns hidden states: the first one in a block-keyed context has the
        committed tokens evaluated again with the tap on (the Python tap is first installed then,
        in a new context), so their states are there too."""
        if self.key_layer is None or self._tap_used:
            return
        kept = list(self.tokens)
        if self._tap is None:
            self._make_context(self.key_layer, tapped=True)
            self.reset()
        self._tap_used = True  # before the evaluation below, which asks for hidden states again
        if kept and self._hidden_valid < len(kept):
            self.eval(kept, 0, outputs="last", hidden=True)

    # ------------------------------------------------------------------ evaluation
    def eval(
        self, tokens, start_pos: int | None = None, *, outputs: str = "all", hidden: bool = True
    ) -> EvalOutput:
        """Decode `tokens` at positions start_pos.. (default: n_past) and commit them to the KV cache.

        outputs="all" returns logits for every position, "last" for the last one only, and
        "hidden" the hidden states of every position with the last position's logits (what
        indexing and a SENSE prefill need: no [k, n_vocab] copies). With hidden=True the key
        states come too: final-norm keys make llama.cpp compute outputs (and the LM head) for every
        position; block keys come from the tap, the LM head running on the output rows only.
        hidden=False runs no tap and no embeddings, so "last" runs the LM head once (cheap prefill,
        plain decoding) and `EvalOutput.hidden` is an empty [0, n_embd] array.
        KV entries at positions >= start_pos are dropped first.
        """
        tokens = np.asarray(tokens, dtype=np.int32)
        k = len(tokens)
        if k == 0:
            raise ValueError("eval needs at least one token")
        if outputs == "hidden" and not hidden:
            raise ValueError('outputs="hidden" needs hidden=True')
        start = self.n_past if start_pos is None else start_pos
        if start > self.n_past:
            raise ValueError(f"start_pos {start} is past the committed length {self.n_past}")
        if start + k > self.n_ctx:
            raise ContextOverflowError(
                f"context full: {start + k} tokens needed, the context holds {self.n_ctx} (use --ctx)"
            )
        if start < self.n_past:
            self.truncate(start)
        if hidden:
            self._want_hidden()
        self._use_embeddings(hidden)
        all_rows = outputs == "all" or (hidden and self.key_layer is None)  # embeddings on: every row is an output
        earlier: list[EvalOutput] = []
        self._hidden_valid = min(self._hidden_valid, start)
        keep_hidden = hidden and self._hidden_valid == start
        for off in range(0, k, self.n_batch):
            m = min(self.n_batch, k - off)
            last_chunk = off + m == k
            self._batch.fill(tokens[off : off + m], start + off)
            self._batch.logits[:m] = 1 if all_rows else 0
            if last_chunk:
                self._batch.logits[m - 1] = 1
            rc = self._decode(self._batch)
            if rc != 0:  # drop whatever earlier chunks committed, keep the state consistent
                llama_cpp.llama_memory_seq_rm(self._mem, 0, start, -1)
                del self.tokens[start:]
                self._hidden_valid = min(self._hidden_valid, start)
                if rc == 2 and self._abort_requested(None):
                    raise Cancelled("decode cancelled")
                raise RuntimeError(f"llama_decode failed with code {rc}")
            if keep_hidden:
                self._cache_hidden(start + off, self._views(m, m).hidden)
            if not last_chunk and outputs != "last":  # the next decode overwrites the buffers: copy
                view = self._views(m if all_rows else 1, m if hidden else 0)
                logits = view.logits.copy() if outputs == "all" else view.logits[:0]
                earlier.append(EvalOutput(logits, view.hidden.copy()))
        del self.tokens[start:]
        self.tokens.extend(tokens.tolist())
        out = self._views(k - off if all_rows else 1, k - off if hidden else 0)
        if outputs == "last":
            return EvalOutput(out.logits[-1:], out.hidden[-1:])
        if outputs == "hidden":
            hidden_rows = [o.hidden for o in earlier] + [out.hidden]
            return EvalOutput(out.logits[-1:], np.concatenate(hidden_rows) if earlier else out.hidden)
        if earlier:
            return EvalOutput(
                logits=np.concatenate([o.logits for o in earlier] + [out.logits]),
                hidden=np.concatenate([o.hidden for o in earlier] + [out.hidden]),
            )
        return out

    def eval_tree(self, root: int, tokens: np.ndarray, parents: np.ndarray, *, hidden: bool = True) -> EvalOutput:
        """Decode the last chosen token `root` (committed at n_past) and a draft tree after it in one
        batch. tokens, parents: [n] (parents[i] = -1: under the root; a parent before its children).

        Each leaf's path is its own sequence (2, 3, ...), started as a copy of the conversation, and
        a node belongs to the sequences of every leaf below it, so it attends to the conversation and
        its own ancestors only (the KV cache is unified: shared cells are stored once). Returns
        logits and hidden states for [root, node 0, ..., node n-1]: [n+1, ...]. Call `keep_path`
        before the next evaluation.
        """
        n = len(tokens)
        if n > MAX_TREE:
            raise ValueError(f"a tree draft has at most {MAX_TREE} nodes (got {n})")
        if hidden:
            self._want_hidden()
        start = self.n_past
        depth = np.zeros(n, np.int32)
        has_child = np.zeros(n, bool)
        for i, p in enumerate(parents.tolist()):
            if p >= 0:
                depth[i] = depth[p] + 1
                has_child[p] = True
        if start + 2 + int(depth.max(initial=0)) > self.n_ctx:
            raise ContextOverflowError(f"context full: no room for a tree draft at position {start}")
        leaves = np.flatnonzero(~has_child).tolist()
        if len(leaves) > MAX_BRANCHES:
            raise ValueError(f"a tree draft has at most {MAX_BRANCHES} leaves (got {len(leaves)})")
        seqs: list[list[int]] = [[] for _ in range(n)]
        for b, leaf in enumerate(leaves):
            i = leaf
            while i >= 0:
                seqs[i].append(TREE_SEQ0 + b)
                i = int(parents[i])
            llama_cpp.llama_memory_seq_cp(self._mem, 0, TREE_SEQ0 + b, -1, -1)
        if self._tree_batch is None:
            self._tree_batch = TokenBatch(MAX_TREE + 1, max_seqs=1 + MAX_BRANCHES)
        batch = self._tree_batch
        batch.fill(np.concatenate(([root], tokens)).astype(np.int32), start)
        batch.pos[1 : n + 1] = start + 1 + depth
        batch.logits[: n + 1] = 1
        batch.set_sequences(0, [0] + [TREE_SEQ0 + b for b in range(len(leaves))])
        for i in range(n):
            batch.set_sequences(i + 1, seqs[i])
        self._use_embeddings(hidden)
        self._hidden_valid = min(self._hidden_valid, start)
        rc = self._decode(batch)
        if rc != 0:
            for b in range(len(leaves)):
                llama_cpp.llama_memory_seq_rm(self._mem, TREE_SEQ0 + b, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._mem, 0, start, -1)
            if rc == 2 and self._abort_requested(None):
                raise Cancelled("verification cancelled")
            raise RuntimeError(f"llama_decode failed with code {rc}")
        self.tokens.append(int(root))
        out = self._views(n + 1, n + 1 if hidden else 0)
        if hidden and self._hidden_valid == start and self._hidden_cache is not None:
            self._cache_hidden(start, out.hidden[:1])
        self._pending_tree = _PendingTree(start, [s[0] for s in seqs], len(leaves))
        return out

    def keep_path(self, path, tokens: np.ndarray) -> None:
        """Commit the nodes `path` (indices, root's child first) of the tree `eval_tree` just
        evaluated, whose tokens are `tokens`, and drop every other branch."""
        tree, self._pending_tree = self._pending_tree, None
        if tree is None:
            raise RuntimeError("keep_path without a tree evaluated by eval_tree")
        path = [int(i) for i in path]
        if path:
            first = tree.start + 1
            llama_cpp.llama_memory_seq_cp(self._mem, tree.branch_of[path[-1]], 0, first, first + len(path))
            if self._hidden_valid == first:
                n = len(tree.branch_of) + 1
                rows = self._views(n, n).hidden
                self._cache_hidden(first, rows[[i + 1 for i in path]])
            self.tokens.extend(int(tokens[i]) for i in path)
        for b in range(tree.n_branches):
            llama_cpp.llama_memory_seq_rm(self._mem, TREE_SEQ0 + b, -1, -1)

    def side_hidden(self, tokens) -> np.ndarray:
        """[k, n_embd] key states of `tokens` evaluated on their own (positions 0..k-1), leaving the
        conversation's KV cache and committed tokens as they are: block keys through the hidden
        pass, which stops after the key block (the 1.5B's question pass: 0.1 s instead of 0.35 s
        for the whole model and its LM head on every row), else in the scratch sequence."""
        tokens = np.asarray(tokens, dtype=np.int32)[: self.n_batch]
        k = len(tokens)
        fast = self.hidden_pass(self.n_batch) if self.key_layer is not None else None
        if fast is not None:
            return fast.run(tokens)
        if self.n_past + k > self.n_ctx:
            raise ContextOverflowError(f"context full: no room for a {k}-token side evaluation")
        if self._tap is None:  # a context with no tap yet: made with one (the committed tokens come back)
            self._want_hidden()
        self._use_embeddings(True)
        self._batch.fill(tokens, 0)
        self._batch.logits[:k] = 1
        self._batch.assign_sequence(k, 1)
        try:
            rc = self._decode(self._batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with code {rc}")
            return np.array(self._views(k, k).hidden)
        finally:
            self._batch.assign_sequence(k, 0)
            llama_cpp.llama_memory_seq_rm(self._mem, 1, -1, -1)

    def hidden_pass(self, n_ctx: int) -> HiddenPass | None:
        """A second context for hidden states of long runs (indexing) at plain-prefill speed, made
        on first use and kept; None where llama.cpp's graph callback cannot provide it."""
        held = self._hidden_pass
        if held is None or held.n_ctx < n_ctx:
            if held is not None:
                held.close()
            held = self._hidden_pass = HiddenPass(
                self._model, self.n_embd, n_ctx=n_ctx, n_batch=self.n_batch, n_threads=self.n_threads,
                layer=self.key_layer,
            )
        return held if held.available else None

    def _cache_hidden(self, start: int, rows: np.ndarray) -> None:
        """Write the committed hidden states rows [m, n_embd] of positions start.. through to the
        cache, which holds positions [0, _hidden_valid) (callers check it reaches `start`)."""
        if self._hidden_cache is None:
            self._hidden_cache = np.zeros((self.n_ctx, self.n_embd), np.float32)
        self._hidden_cache[start : start + len(rows)] = rows
        self._hidden_valid = start + len(rows)

    def _use_embeddings(self, on: bool) -> None:
        """Switch the context's hidden-state outputs on or off: for final-norm keys llama.cpp's
        embeddings (a call into llama.cpp only on change), for block keys the tap."""
        if self._tap is not None:
            self._tap.enabled = on
        on = on and self.key_layer is None
        if on != self._embeddings_on:
            llama_cpp.llama_set_embeddings(self._ctx, on)
            self._embeddings_on = on

    def _abort_requested(self, _data) -> bool:
        event = self._abort_event
        return event is not None and event.is_set()

    @contextlib.contextmanager
    def cancellable(self, cancel):
        """Inside, every multi-token decode (a prefill chunk, a draft's verification) polls `cancel`
        through llama.cpp's abort callback, asked between graph nodes on the CPU: a cancel ends it
        within milliseconds, raising Cancelled with nothing of that decode committed. The hook is a
        Python call per graph node (within noise on the 1.5B's prefills and drafts here:
        benchmarks/cancel_bench.py), so one-token decodes, short anyway, never carry it."""
        previous, self._abort_event = self._abort_event, cancel
        try:
            yield
        finally:
            self._abort_event = previous

    def _decode(self, batch: TokenBatch) -> int:
        if self._tap is not None:
            self._tap.n_read = 0  # rows of an earlier decode must not pass for this one's
        hooked = self._abort_event is not None and batch.raw.n_tokens > 1
        if not hooked:
            return llama_cpp.llama_decode(self._ctx, batch.raw)
        llama_cpp.llama_set_abort_callback(self._ctx, self._abort_hook, None)
        try:
            return llama_cpp.llama_decode(self._ctx, batch.raw)
        finally:
            llama_cpp.llama_set_abort_callback(self._ctx, llama_cpp.ggml_abort_callback(), None)

    def _views(self, n_logits: int, n_hidden: int) -> EvalOutput:
        """Views of the last decode's output rows: logits [n_logits, n_vocab] and the hidden states of
        its last n_hidden rows (block keys: of every batch row, from the tap; final keys: of the output
        rows, which are then all rows)."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_logits, self.n_vocab))
        if n_hidden == 0:
            return EvalOutput(logits=logits, hidden=self._no_hidden)
        if self.key_layer is not None:
            read = self._tap.n_read if self._tap is not None else 0
            if read < n_hidden:
                raise RuntimeError(f"block {self.key_layer}'s states: {read} rows read, {n_hidden} wanted")
            return EvalOutput(logits=logits, hidden=self._tap.rows[read - n_hidden : read])
        hidden = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(self._ctx), shape=(n_logits, self.n_embd))
        return EvalOutput(logits=logits, hidden=hidden[n_logits - n_hidden :])

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def committed_hidden(self, upto: int) -> np.ndarray | None:
        """[upto, n_embd] view of the hidden states of committed positions 0..upto-1, or None when
        some of them were evaluated without hidden states (evaluate with hidden=True first)."""
        if self._hidden_cache is None or upto > self._hidden_valid:
            return None
        return self._hidden_cache[:upto]

    def truncate(self, n_past: int) -> None:
        """Drop KV entries at positions >= n_past (e.g. rejected draft tokens)."""
        self._hidden_valid = min(self._hidden_valid, n_past)
        if n_past < self.n_past:
            llama_cpp.llama_memory_seq_rm(self._mem, 0, n_past, -1)
            del self.tokens[n_past:]

    def reset(self) -> None:
        """Drop every committed token (and a tree evaluated but not kept) and the saved states: the
        next prompt is evaluated whole."""
        llama_cpp.llama_memory_clear(self._mem, True)
        self.slots.clear()
        self.tokens.clear()
        self._hidden_valid = 0
        self._pending_tree = None

    def prefill(self, prompt, *, outputs: str = "last", hidden: bool = False, cancel=None,
                progress=None) -> EvalOutput:
        """Evaluate a prompt, reusing the KV entries of the longest prefix already committed.

        At least the prompt's last token is re-evaluated, so its logits are fresh. With hidden=True
        only a prefix whose hidden states are cached counts (`committed_hidden` covers the prompt).
        With a `cancel` event, a long prompt goes in CANCEL_CHUNK-token decodes that check it between
        them (raising Cancelled; what was evaluated stays committed, for the next prefill to reuse),
        and the decode under way polls it too (`cancellable`), so a cancel ends the prefill within
        milliseconds, not at the end of a chunk (~2 s for 128 tokens of the 1.5B here).
        """
        prompt = np.asarray(prompt, dtype=np.int32)
        if len(prompt) == 0:
            raise ValueError("empty prompt")
        if outputs == "all":
            return self.eval(prompt, 0, outputs="all", hidden=hidden)
        reuse = self._resume(prompt[:-1], hidden)
        out = self._prefill_from(prompt, reuse, outputs, hidden, cancel, progress)
        out.reused = reuse
        return out

    def _resume(self, head: np.ndarray, hidden: bool) -> int:
        """How many tokens of `head` (a prompt but its last token) are already evaluated: the live
        conversation's, or a saved one's brought back when it holds more (kv_slots.py); the live
        one is saved first when the prompt would throw much of it away."""
        reuse = common_prefix(self.tokens, head)
        if hidden:  # positions cached without their hidden states are evaluated again
            reuse = min(reuse, self._hidden_valid)
        saved, match = self.slots.best(head, hidden=hidden)
        switch = saved is not None and match >= reuse + SWITCH_MIN
        if switch or self.n_past - reuse >= SAVE_MIN:
            self._save_live()
        if switch:
            return match if self._restore(saved) else 0
        return reuse

    def _save_live(self) -> None:
        """Set the live conversation's state aside in `slots` (when it has one worth keeping)."""
        if self.n_past < SAVE_MIN or self.slots.cap_bytes <= 0:
            return
        size = llama_cpp.llama_state_seq_get_size(self._ctx, 0)
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ctx, data, size, 0) != size:
            return
        hidden = self._hidden_cache[: self._hidden_valid].copy() if self._hidden_cache is not None else self._no_hidden
        self.slots.add(SavedState(list(self.tokens), data, hidden))

    def _restore(self, saved: SavedState) -> bool:
        """Make `saved` the live conversation; False (and nothing held) if llama.cpp refused it."""
        self.slots.take(saved)
        llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
        self.tokens.clear()
        self._hidden_valid = 0
        if llama_cpp.llama_state_seq_set_data(self._ctx, saved.data, len(saved.data), 0) != len(saved.data):
            llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
            return False
        self.tokens.extend(saved.tokens)
        if len(saved.hidden):
            self._cache_hidden(0, saved.hidden)
        return True

    def _prefill_from(self, prompt: np.ndarray, reuse: int, outputs: str, hidden: bool, cancel,
                      progress) -> EvalOutput:
        """The prompt from `reuse` on; with `cancel`, in CANCEL_CHUNK decodes, each followed by
        progress(tokens evaluated or reused, prompt length) when given (and once before the first:
        a front end can say the prompt is being read before a chunk takes its second)."""
        if cancel is None or outputs != "last":
            return self.eval(prompt[reuse:], reuse, outputs=outputs, hidden=hidden)
        if progress is not None and len(prompt) - reuse > CANCEL_CHUNK:
            progress(reuse, len(prompt))
        with self.cancellable(cancel):
            while len(prompt) - reuse > CANCEL_CHUNK:
                if cancel.is_set():
                    raise Cancelled("prefill cancelled")
                self.eval(prompt[reuse : reuse + CANCEL_CHUNK], reuse, outputs="last", hidden=hidden)
                reuse += CANCEL_CHUNK
                if progress is not None:
                    progress(reuse, len(prompt))
            if cancel.is_set():
                raise Cancelled("prefill cancelled")
            return self.eval(prompt[reuse:], reuse, outputs=outputs, hidden=hidden)

    @functools.cached_property
    def info(self):
        """GGUF metadata (model_info.ModelInfo), read on first use."""
        return read_model_info(self.path)

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    # ------------------------------------------------------------------ vocabulary
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return tokenize(self._vocab, text, add_special, parse_special)  # input is cleaned where it enters (text_input.py)

    def piece(self, token: int) -> bytes:
        """The bytes a token renders to in generated text (control tokens render empty)."""
        cached = self._pieces.get(token)
        if cached is None:
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
            cached = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = cached
        return cached

    def detokenize_special(self, token: int) -> str:
        """A token's text with special tokens rendered (e.g. '<|im_end|>'); '' for token -1."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def detokenize(self, tokens) -> str:
        return b"".join(self.piece(int(t)) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self._is_eog[token])

    @property
    def special_mask(self) -> np.ndarray:
        """[n_vocab] bool: control and end-of-generation tokens."""
        return self._is_special

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if getattr(self, "placement", None) is not None:
            from . import rpc_loss

            if rpc_loss.lost():  # a decode waits on the lost worker for good: freeing would wait on it too
                rpc_loss.keep(self)
                return
        if getattr(self, "_hidden_pass", None) is not None:
            self._hidden_pass.close()
            self._hidden_pass = None
        for name in ("_batch", "_tree_batch"):
            if getattr(self, name, None) is not None:
                getattr(self, name).free()
                setattr(self, name, None)
        if getattr(self, "_ctx", None):
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass
