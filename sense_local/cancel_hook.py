"""Cancelling a decode under way: llama.cpp's abort callback, polled between graph nodes."""
from __future__ import annotations

import contextlib

from . import native

llama_cpp = native.llama_cpp


class CancelHook:
    """The cancel event multi-token decodes poll while one is set (`cancellable`)."""

    def __init__(self):
        self.event = None  # a threading.Event, or None outside `cancellable`
        self._callback = llama_cpp.ggml_abort_callback(self._requested)  # kept alive with self

    def _requested(self, _data) -> bool:
        return self.requested()

    def requested(self) -> bool:
        event = self.event
        return event is not None and event.is_set()

    @contextlib.contextmanager
    def cancellable(self, cancel):
        """Inside, every multi-token decode (a prefill chunk, a draft's verification) polls `cancel`
        through llama.cpp's abort callback, asked between graph nodes on the CPU: a cancel ends it
        within milliseconds, raising Cancelled with nothing of that decode committed. The hook is a
        Python call per graph node (within noise on the 1.5B's prefills and drafts here:
        benchmarks/cancel_bench.py), so one-token decodes, short anyway, never carry it."""
        previous, self.event = self.event, cancel
        try:
            yield
        finally:
            self.event = previous

    def decode(self, ctx, batch) -> int:
        """llama_decode of `batch`, polling the event when one is set and the batch has several tokens."""
        if self.event is None or batch.raw.n_tokens <= 1:
            return llama_cpp.llama_decode(ctx, batch.raw)
        llama_cpp.llama_set_abort_callback(ctx, self._callback, None)
        try:
            return llama_cpp.llama_decode(ctx, batch.raw)
        finally:
            llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)
