"""The target model: one llama.cpp context that returns logits *and* key states.

A `llama_decode` of k tokens yields logits [k, n_vocab] and key states [k, n_embd], what SENSE
searches with: block l's normalized input by default, read from the running graph (key_source.py),
or with key_layer None the final hidden states (llama.cpp's embeddings). Both are zero-copy views,
valid until the next `eval`: callers copy what they keep. Beside it: the committed key states
(key_cache.py), prefill reuse (prefill_reuse.py), the cancel hook, side passes, the vocabulary.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import numpy as np

from . import native, plain_layout, prefill_reuse, side_pass
from .cancel_hook import CancelHook
from .chunked_eval import ContextHolder, EvalOutput, eval_chunks, eval_one
from .errors import Cancelled, ContextOverflowError, ModelError, SenseError
from .hidden_pass import HiddenPass
from .key_cache import KeyStateCache
from .key_layer import default_key_layer, parse_key_layer  # noqa: F401 - parse_key_layer: the CLI's
from .key_source import KeySource
from .kv_slots import DEFAULT_MIB, KvSlots
from .model_info import check_readable_gguf, read_model_info
from .model_load import load_model
from .token_batch import TokenBatch, context_params
from .tree_layout import MAX_BRANCHES, MAX_TREE, TREE_SEQ0, PendingTree, tree_layout
from .vocabulary import Vocabulary

llama_cpp = native.llama_cpp


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class Engine(Vocabulary, ContextHolder):
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
        disk_mib: int = 0,
        plain_at_start: bool = True,
    ):
        self.path = Path(model_path)
        check_readable_gguf(self.path)
        native.ensure_backend()
        native.limit_blas_threads()
        self.n_threads = n_threads or default_threads()
        self.n_gpu_layers = n_gpu_layers
        self._model, self.placement = load_model(self.path, rpc, n_gpu_layers)  # rpc: model_load.py
        self._read_vocabulary(self._model)
        self.n_embd = llama_cpp.llama_model_n_embd(self._model)
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        self.n_ctx = min(n_ctx, n_ctx_train) if n_ctx_train > 0 else n_ctx
        self.n_batch = min(n_batch, self.n_ctx)
        self.n_layer = llama_cpp.llama_model_n_layer(self._model)
        self._flash_attn = flash_attn
        self.key_layer: int | None = None  # where key states are read: None the final norm, l block l's input
        self.key_source: KeySource | None = None  # the context's (key_source.py)
        self._ctx = None
        self._cancel = CancelHook()  # the cancel event multi-token decodes poll (see `cancellable`)
        self._plain, self._plain_checked = None, False  # the plain layout (`plain_layout`), not yet looked for
        self.slots = KvSlots(slot_mib << 20)  # states of conversations set aside (kv_slots.py)
        self.disk_bytes, self.disk = disk_mib << 20, None  # conversations kept for later runs (kv_disk.py; 0: none)
        self._make_context(self.resolve_key_layer(key_layer))
        self._batch = TokenBatch(self.n_batch)  # one reusable batch, filled through numpy views
        self._tree_batch: TokenBatch | None = None  # made on the first tree draft
        self._pending_tree: PendingTree | None = None  # a tree evaluated, its path not yet kept
        self._hidden_pass: HiddenPass | None = None  # made by hidden_pass() on first use
        self._no_keys = np.zeros((0, self.n_embd), dtype=np.float32)  # [0, n_embd]
        self.keys = KeyStateCache(self.n_embd, self.n_ctx)  # key state of each committed position
        self.tokens: list[int] = []  # committed tokens in the KV cache (len == n_past)
        if plain_at_start:  # where wanted, opened now (0.3-0.5 s): a first long prompt must not wait for it
            self.plain_layout()  # (a one-shot command opens it where its prompt first wants it, if it does)

    @property
    def rpc_workers(self) -> tuple[str, ...]:
        """HOST:PORT of each worker holding layers of this model (none: all local)."""
        return tuple(dict.fromkeys(str(d.endpoint) for d in self.placement.devices)) if self.placement else ()

    def _make_context(self, key_layer: int | None, *, tapped: bool = False) -> None:
        """(Re)create the llama.cpp context, whose key states are read at `key_layer` (key_source.py;
        `tapped`: a decode wants key states, so a block gets a tap even where only Python's exists)."""
        if key_layer is not None and not 0 < key_layer < self.n_layer:
            raise SenseError(f"key layer {key_layer} is not a block of this model (1..{self.n_layer - 1}, or final)")
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self.forget_plain_layout()  # its key source reads the old key layer
        source = KeySource.make(key_layer, self.n_embd, max(self.n_batch, MAX_TREE + 1), tapped=tapped,
                                model_path=self.path)
        cparams = context_params(n_ctx=self.n_ctx, n_batch=self.n_batch, n_threads=self.n_threads)
        # Sequence 0 holds the conversation; sequence 1 is scratch space for side evaluations
        # (side_pass.py) that must not disturb it; sequences 2.. hold the branches of a tree draft
        # while it is verified (`eval_tree`). One unified KV buffer serves them all (measured: no
        # change in decode or verify speed against a single-sequence context).
        cparams.n_seq_max = TREE_SEQ0 + MAX_BRANCHES
        cparams.kv_unified = True
        if self._flash_attn is not None:  # None: llama.cpp decides (AUTO)
            cparams.flash_attn_type = 1 if self._flash_attn else 0
        source.configure(cparams)
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise ModelError(f"{self.path}: llama.cpp could not create a context (n_ctx={self.n_ctx})")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.slots.clear()  # their key states were read at the old key layer
        self.key_layer, self.key_source = key_layer, source

    def resolve_key_layer(self, key_layer: int | None | str) -> int | None:
        """A key layer as given (a block, None: the final norm, or "default") as a block or None."""
        return default_key_layer(self.n_layer) if key_layer == "default" else key_layer

    def use_key_layer(self, key_layer: int | None | str) -> None:
        """Read key states at `key_layer` from now on (a store keyed there is in use). A change
        makes a new context: the committed tokens are dropped, as by `reset`."""
        key_layer = self.resolve_key_layer(key_layer)
        if key_layer == self.key_layer:
            return
        self._make_context(key_layer)
        self.reset()
        if self._hidden_pass is not None:
            self._hidden_pass.close()
            self._hidden_pass = None

    def _want_keys(self) -> None:
        """Before a decode that returns key states: the first one in a block-keyed context has the
        committed tokens evaluated again with the tap on (the Python tap is first installed then,
        in a new context), so their states are there too."""
        if self.key_layer is None or self.key_source.used:
            return
        kept = list(self.tokens)
        if self.key_source.tap is None:
            self._make_context(self.key_layer, tapped=True)
            self.reset()
        self.key_source.used = True  # before the evaluation below, which asks for key states again
        if kept and self.keys.valid < len(kept):
            self.eval(kept, 0, outputs="last", with_keys=True)

    # ------------------------------------------------------------------ evaluation
    def eval(
        self, tokens, start_pos: int | None = None, *, outputs: str = "all", with_keys: bool = True
    ) -> EvalOutput:
        """Decode `tokens` at positions start_pos.. (default: n_past) and commit them to the KV cache.

        outputs="all" returns logits for every position, "last" for the last one only, "keys" the
        key states of every position with the last position's logits (indexing, a SENSE prefill).
        With with_keys=True the key states come too (final-norm keys: llama.cpp computes every row's
        output and LM head; block keys: the tap); with_keys=False runs neither, so "last" runs the LM
        head once and `EvalOutput.keys` is an empty [0, n_embd] array. KV entries at positions
        >= start_pos are dropped first.
        """
        tokens = np.asarray(tokens, dtype=np.int32)
        k = len(tokens)
        if k == 0:
            raise ValueError("eval needs at least one token")
        if outputs == "keys" and not with_keys:
            raise ValueError('outputs="keys" needs with_keys=True')
        start = self.n_past if start_pos is None else start_pos
        if start > self.n_past:
            raise ValueError(f"start_pos {start} is past the committed length {self.n_past}")
        if start + k > self.n_ctx:
            raise ContextOverflowError(
                f"context full: {start + k} tokens needed, the context holds {self.n_ctx} (use --ctx)"
            )
        if start < self.n_past:
            self.truncate(start)
        if with_keys:
            self._want_keys()
        # long runs (a prompt, a long draft verified) go faster on the plain layout, where there is one
        on = (self.plain_layout() if plain_layout.runs_there(k, outputs) else None) or self
        if on is not self and not on.take(self, start):
            on = self  # llama.cpp would not hand the conversation over: decoded here
        on.key_source.switch(on._ctx, with_keys)
        all_rows = outputs == "all" or (with_keys and self.key_layer is None)  # embeddings on: every row is an output
        earlier, last_m = eval_chunks(self, on, tokens, start, outputs, with_keys, all_rows)
        del self.tokens[start:]
        self.tokens.extend(tokens.tolist())
        if on is not self:
            on.give(self)
        out = on._views(last_m if all_rows else 1, last_m if with_keys else 0)
        if outputs == "last":
            return EvalOutput(out.logits[-1:], out.keys[-1:])
        if outputs == "keys":
            key_rows = [o.keys for o in earlier] + [out.keys]
            return EvalOutput(out.logits[-1:], np.concatenate(key_rows) if earlier else out.keys)
        if earlier:
            return EvalOutput(
                logits=np.concatenate([o.logits for o in earlier] + [out.logits]),
                keys=np.concatenate([o.keys for o in earlier] + [out.keys]),
            )
        return out

    def eval_one(self, token: int, *, with_keys: bool = False) -> EvalOutput:
        """`eval([token], outputs="last", with_keys=...)` in fewer steps (`chunked_eval.eval_one`):
        a reply's step without a draft. Views valid until the next eval."""
        if len(self.tokens) + 1 > self.n_ctx:
            raise ContextOverflowError(f"context full: {len(self.tokens) + 1} tokens needed, the context holds {self.n_ctx} (use --ctx)")
        if with_keys:
            self._want_keys()
        return eval_one(self, token, with_keys)

    def plain_layout(self):
        """The weights in the file's own layout with a context of their own, where this engine reads
        prompts faster on them (plain_layout.py; opened with the engine, again after a forget), or None."""
        if not self._plain_checked:
            self._plain_checked = True
            self._plain = plain_layout.open_for(self)
        return self._plain

    def forget_plain_layout(self) -> None:
        """Close the plain layout (a new key layer, a new verdict): the next long decode opens it again."""
        if self._plain is not None:
            if self._hidden_pass is not None:  # it may run on the plain layout's weights
                self._hidden_pass.close()
                self._hidden_pass = None
            self._plain.close()
        self._plain, self._plain_checked = None, False

    def eval_tree(self, root: int, tokens: np.ndarray, parents: np.ndarray, *, with_keys: bool = True) -> EvalOutput:
        """Decode the last chosen token `root` (committed at n_past) and a draft tree after it in one
        batch. tokens, parents: [n] (parents[i] = -1: under the root; a parent before its children).

        Each leaf's path is its own sequence (2, 3, ...), started as a copy of the conversation, and
        a node belongs to the sequences of every leaf below it, so it attends to the conversation and
        its own ancestors only (the KV cache is unified: shared cells are stored once). Returns
        logits and key states for [root, node 0, ..., node n-1]: [n+1, ...]. Call `keep_path`
        before the next evaluation.
        """
        n = len(tokens)
        layout = tree_layout(parents)
        if with_keys:
            self._want_keys()
        start = self.n_past
        if start + 2 + layout.max_depth > self.n_ctx:
            raise ContextOverflowError(f"context full: no room for a tree draft at position {start}")
        for b in range(layout.n_branches):
            llama_cpp.llama_memory_seq_cp(self._mem, 0, TREE_SEQ0 + b, -1, -1)
        if self._tree_batch is None:
            self._tree_batch = TokenBatch(MAX_TREE + 1, max_seqs=1 + MAX_BRANCHES)
        batch = self._tree_batch
        batch.fill(np.concatenate(([root], tokens)).astype(np.int32), start)
        batch.pos[1 : n + 1] = start + 1 + layout.depth
        batch.logits[: n + 1] = 1
        batch.set_sequences(0, [0] + [TREE_SEQ0 + b for b in range(layout.n_branches)])
        for i in range(n):
            batch.set_sequences(i + 1, layout.seqs[i])
        self.key_source.switch(self._ctx, with_keys)
        self.keys.truncate(start)
        rc = self._decode(batch)
        if rc != 0:
            for b in range(layout.n_branches):
                llama_cpp.llama_memory_seq_rm(self._mem, TREE_SEQ0 + b, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._mem, 0, start, -1)
            if rc == 2 and self._cancel.requested():
                raise Cancelled("verification cancelled")
            raise RuntimeError(f"llama_decode failed with code {rc}")
        self.tokens.append(int(root))
        out = self._views(n + 1, n + 1 if with_keys else 0)
        if with_keys and self.keys.valid == start and self.keys.started:
            self.keys.write(start, out.keys[:1])
        self._pending_tree = PendingTree(start, [s[0] for s in layout.seqs], layout.n_branches)
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
            if self.keys.valid == first:
                n = len(tree.branch_of) + 1
                rows = self._views(n, n).keys
                self.keys.write(first, rows[[i + 1 for i in path]])
            self.tokens.extend(int(tokens[i]) for i in path)
        for b in range(tree.n_branches):
            llama_cpp.llama_memory_seq_rm(self._mem, TREE_SEQ0 + b, -1, -1)

    def side_keys(self, tokens) -> np.ndarray:
        """[k, n_embd] key states of `tokens` evaluated on their own (side_pass.py)."""
        return side_pass.side_keys(self, tokens)

    def hidden_pass(self, n_ctx: int) -> HiddenPass | None:  # a second context for long runs: side_pass.py
        return side_pass.hidden_pass(self, n_ctx)

    def cancellable(self, cancel):
        """Inside, multi-token decodes poll `cancel` (cancel_hook.py)."""
        return self._cancel.cancellable(cancel)

    @property
    def n_past(self) -> int:
        return len(self.tokens)

    def committed_keys(self, upto: int) -> np.ndarray | None:
        """[upto, n_embd] view of the key states of committed positions 0..upto-1, or None when
        some of them were evaluated without key states (evaluate with_keys=True first)."""
        return self.keys.upto(upto)

    def truncate(self, n_past: int) -> None:
        """Drop KV entries at positions >= n_past (e.g. rejected draft tokens)."""
        self.keys.truncate(n_past)
        if n_past < self.n_past:
            llama_cpp.llama_memory_seq_rm(self._mem, 0, n_past, -1)
            del self.tokens[n_past:]

    def reset(self) -> None:
        """Drop every committed token (and a tree evaluated but not kept) and the saved states: the
        next prompt is evaluated whole."""
        llama_cpp.llama_memory_clear(self._mem, True)
        self.slots.clear()
        self.tokens.clear()
        self.keys.truncate(0)
        self._pending_tree = None

    def prefill(self, prompt, *, outputs: str = "last", with_keys: bool = False, cancel=None,
                progress=None) -> EvalOutput:
        """Evaluate a prompt, reusing the KV entries of the longest prefix already evaluated (with
        with_keys=True, one whose key states are cached); its last token is always evaluated again.
        With `cancel`, in chunks a cancel stops between and within (prefill_reuse.py)."""
        return prefill_reuse.prefill(self, prompt, outputs=outputs, with_keys=with_keys, cancel=cancel,
                                     progress=progress)

    @functools.cached_property
    def info(self):
        """GGUF metadata (model_info.ModelInfo), read on first use."""
        return read_model_info(self.path)

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

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
        if getattr(self, "_plain", None) is not None:
            self._plain.close()
            self._plain = None
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
