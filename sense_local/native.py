"""The one place that loads llama.cpp's shared libraries.

Order matters here. usearch's extension carries a static copy of libstdc++; its locale-facet ids
are GNU-unique symbols, so whichever copy the process loads first owns them. If usearch comes
first, llama.cpp's vocabulary load later fails with `std::bad_cast`. We therefore load the shared
libstdc++ with RTLD_GLOBAL before anything else, which makes every later copy bind to it: any
import order of this package works. (A program that imports usearch *before* sense_local cannot be
mended in-process; the engine then says so in its error.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

USEARCH_WAS_FIRST = "usearch" in sys.modules or "usearch.index" in sys.modules


def _preload_libstdcxx() -> None:
    if not sys.platform.startswith("linux"):
        return  # macOS uses libc++ and has no such clash
    name = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
    try:
        ctypes.CDLL(name, mode=os.RTLD_GLOBAL)
    except OSError:
        pass  # no shared libstdc++: nothing can clash with it either


_preload_libstdcxx()

import llama_cpp  # noqa: E402  (after the preload, before anything of ours)

_backend_ready = False


@llama_cpp.llama_log_callback
def _quiet_log(level, text, user_data):  # pragma: no cover - called from C
    if os.environ.get("SENSE_DEBUG"):
        sys.stderr.write(text.decode("utf-8", errors="replace"))


def ensure_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def load_usearch():
    """Import usearch.index after llama.cpp is initialised (see the module docstring)."""
    ensure_backend()
    from usearch import index

    return index
