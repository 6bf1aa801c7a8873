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
import functools
import hashlib
import os
import sys
from pathlib import Path

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

# numpy's BLAS (OpenBLAS) keeps a thread pool whose threads spin after every call: beside llama.cpp's
# own decode threads on a small machine they steal the cores llama.cpp needs. Measured on the 1.5B
# (2 cores, docqa-rag, `benchmarks/profile_method`): one 1500-row matvec per step for SENSE's live
# context made every following decode ~45% slower (sense 13.9 -> 19.6 tok/s with one BLAS thread).
# Our BLAS work is small matvecs, so one thread is enough. The variable works when numpy is not
# loaded yet (llama_cpp imports it); `limit_blas_threads` covers a host that imported numpy first.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import llama_cpp  # noqa: E402  (after the preload, before anything of ours)
import numpy as np  # noqa: E402  (loaded by llama_cpp already)


# On Linux numpy advises the kernel to back every array of 4 MiB or more with transparent huge pages;
# where THP defrag is `madvise` (most distributions' default, this machine's) the first touch of such
# an array may wait on memory compaction. A speculator's key cache and live context store are such
# arrays ([n_ctx, n_embd] float32, 25 MB each on the 1.5B): the first 401 rows written into a fresh
# one took 10 ms (5-46 ms) against ~1 ms, twice in a process's first SENSE reply (the 1.5B's 13-token
# docqa-rag-assert drafted for 19.5 ms against 10.5 ms, prefilled in 44 against 34). Nothing of ours
# gains from huge pages (the weights are llama.cpp's, the document index USearch's; a context-store
# search of 3,000 rows ran 0.136 / 0.139 ms with / without), so new arrays get ordinary pages: numpy's
# own switch, what NUMPY_MADVISE_HUGEPAGE=0 sets at its import (numpy is loaded by now).
np._core.multiarray._set_madvise_hugepage(False)


def limit_blas_threads() -> None:
    """One BLAS thread for this process, whatever was imported first (see the note above)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")

_backend_ready = False

REBUILD_HINT = (
    "sense-local: llama.cpp died on an illegal instruction: this build uses a CPU feature this machine "
    "cannot run; rebuild it for this machine with `SENSE_REBUILD=1 scripts/setup` "
    "(or `CMAKE_ARGS=-DGGML_NATIVE=OFF SENSE_REBUILD=1 scripts/setup`)"
)


def _install_sigill_hint() -> None:
    """Turn a bare "Illegal instruction" from native code into one line naming the rebuild command.

    A C-level handler (through ctypes) because Python's own signal handlers only run between
    bytecodes: the faulting instruction would simply run again. It restores the terminal a TUI may
    have left in its alternate screen, writes the hint and exits with 128 + SIGILL, as the shell would.
    """
    import signal

    if not hasattr(signal, "SIGILL") or sys.platform == "win32":
        return
    libc = ctypes.CDLL(None)
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)

    def on_sigill(signum):  # pragma: no cover - runs in a dying process
        exit_with_line(REBUILD_HINT, 128 + signum)

    global _sigill_handler
    _sigill_handler = handler_type(on_sigill)  # kept alive for the life of the process
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, handler_type]
    libc.signal(int(signal.SIGILL), _sigill_handler)


def exit_with_line(line: str, code: int) -> None:
    """End the process now with one line on stderr, the terminal a TUI may have left in its alternate
    screen given back first: for native failures (a signal, a thread of llama.cpp's) where raising
    cannot reach main()."""
    prefix = b"\x1b[?1049l\x1b[?25h\r\n" if os.isatty(2) else b""
    os.write(2, prefix + line.encode() + b"\n")
    os._exit(code)


_sigill_handler = None
_install_sigill_hint()


@functools.cache
def build_id() -> str:
    """Names the llama.cpp build this process loaded (a digest of its shared libraries): two builds of
    one llama-cpp-python version (other flags, or our patches, scripts/llama_patches.py) decode at
    other costs, so what was measured on one (the cost curve, the layout verdict) is not read for the
    other. ~20 ms, once a process."""
    folder = Path(llama_cpp.__file__).parent / "lib"
    digest = hashlib.sha256()
    for lib in sorted(folder.glob("lib*.so")) + sorted(folder.glob("lib*.dylib")):
        digest.update(lib.name.encode() + lib.read_bytes())
    return digest.hexdigest()[:8]


def system_info() -> str:
    """llama.cpp's own line: the backends it was built with and the CPU features each one uses."""
    ensure_backend()
    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


def backends(info: str | None = None) -> list[str]:
    """The compute backends in a system-info line, e.g. ['CPU'] or ['CUDA', 'CPU']: each backend's
    block starts with `NAME : ` ("CPU : SSE3 = 1 | AVX = 1 | ... | CUDA : ARCHS = 900 | ...")."""
    names = []
    for block in (info or system_info()).split("|"):
        name, sep, _ = block.partition(" : ")
        name = name.strip()
        if sep and name and "=" not in name and name not in names:
            names.append(name)
    gpu = [n for n in names if n != "CPU"]
    return gpu + ["CPU"]


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


def shared_library(name: str) -> ctypes.CDLL:
    """The copy of ggml's library `name` that llama.cpp itself uses. The wheel ships libNAME.so and
    libNAME.so.0 as two files, and libllama links the second: loading the first would give this process
    a second ggml with its own state (the abort callback set there would never be called)."""
    from llama_cpp._ctypes_extensions import load_shared_library

    ensure_backend()
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    linked = lib_dir / f"lib{name}.so.0"
    return ctypes.CDLL(str(linked)) if linked.exists() else load_shared_library(name, lib_dir)
