"""Small C helpers of ours (native_src/*.c), compiled once into the cache with the machine's C
compiler and loaded with ctypes: callbacks llama.cpp calls for every graph node, where a Python
callback costs ~2 us a node. Each file links against nothing (`cc -O2 -shared -fPIC`); where no
compiler is found or the build fails, `library` gives None and the caller keeps its Python callback."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "native_src"


@functools.cache
def library(name: str) -> ctypes.CDLL | None:
    """native_src/<name>.c as a loaded library, built into the cache on first use (keyed by its
    source, so an edited file is built again), or None."""
    from .paths import cache_dir

    c_file = SOURCES / f"{name}.c"
    lib_path = cache_dir() / "native" / f"{name}-{hashlib.sha256(c_file.read_bytes()).hexdigest()[:16]}.so"
    if not lib_path.exists():
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            return None
        lib_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
            out = Path(tmp) / lib_path.name
            done = subprocess.run([cc, "-O2", "-shared", "-fPIC", str(c_file), "-o", str(out)],
                                  capture_output=True)
            if done.returncode != 0 or not out.exists():
                return None
            out.replace(lib_path)  # the final name only for a whole library
    try:
        return ctypes.CDLL(str(lib_path))
    except OSError:
        return None


def function_address(lib: ctypes.CDLL, name: str) -> int:
    """The address of a function of `lib`, to be wrapped in one of llama_cpp's callback types."""
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
