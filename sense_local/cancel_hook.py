"""Cancelling a decode under way: llama.cpp's abort callback, polled between graph nodes."""
from __future__ import annotations

import contextlib
import ctypes

from . import native, native_build

llama_cpp = native.llama_cpp
POLL_EVERY_NS = 1_000_000  # the native poll asks Python whether the event is set at most once a millisecond


class _PollState(ctypes.Structure):
    """native_src/abort_poll.c's struct sense_abort_poll."""

    _fields_ = [("poll", ctypes.c_void_p), ("every_ns", ctypes.c_int64), ("next_ns", ctypes.c_int64)]


class CancelHook:
    """The cancel event multi-token decodes poll while one is set (`cancellable`)."""

    def __init__(self):
        self.event = None  # a threading.Event, or None outside `cancellable`
        self._check = llama_cpp.ggml_abort_callback(self._requested)  # kept alive with self
        lib = native_build.library("abort_poll")
        if lib is not None:  # llama.cpp calls C, which calls self._check once a millisecond at most
            self._lib = lib
            self._state = _PollState(ctypes.cast(self._check, ctypes.c_void_p).value, POLL_EVERY_NS, 0)
            self._callback = llama_cpp.ggml_abort_callback(native_build.function_address(lib, "sense_abort_poll"))
            self._data = ctypes.cast(ctypes.pointer(self._state), ctypes.c_void_p)
        else:  # no C compiler: Python asked at every node
            self._state, self._callback, self._data = None, self._check, None
        self.native = self._state is not None

    def _requested(self, _data) -> bool:
        return self.requested()

    def requested(self) -> bool:
        event = self.event
        return event is not None and event.is_set()

    @contextlib.contextmanager
    def cancellable(self, cancel):
        """Inside, every multi-token decode (a prefill chunk, a draft's verification) polls `cancel`
        through llama.cpp's abort callback, asked between graph nodes on the CPU: a cancel ends it
        within milliseconds, raising Cancelled with nothing of that decode committed. The event is
        read at a decode's first node and then at most once a millisecond (native_src/abort_poll.c;
        Python at every node where no C compiler is found), so one-token decodes, short anyway,
        never carry the hook."""
        previous, self.event = self.event, cancel
        try:
            yield
        finally:
            self.event = previous

    def decode(self, ctx, batch) -> int:
        """llama_decode of `batch`, polling the event when one is set and the batch has several tokens."""
        if self.event is None or batch.raw.n_tokens <= 1:
            return llama_cpp.llama_decode(ctx, batch.raw)
        if self._state is not None:
            self._state.next_ns = 0  # the first node reads the event: a cancel already set stops it there
        llama_cpp.llama_set_abort_callback(ctx, self._callback, self._data)
        try:
            return llama_cpp.llama_decode(ctx, batch.raw)
        finally:
            llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)
