"""NumPy's huge-page advice, switched off for this process.

On Linux NumPy advises the kernel to back every array of 4 MiB or more with transparent huge pages
(madvise MADV_HUGEPAGE). Where the kernel's THP defrag setting is `madvise` (the default of most
distributions, and of this machine), the first touch of such an array may wait for the kernel to
compact memory into a 2 MiB page. The buffers a speculator fills with a reply's key states (its key
cache and live context store: [n_ctx, n_embd] float32, 25 MB each on the 1.5B at n_ctx 4096) are
such arrays: writing a 401-token prompt's rows into a fresh one took 5-46 ms (10 ms typically),
1 ms without the advice, and a process's first SENSE reply (the bench's every reply, each with a
speculator of its own) paid it twice: the 1.5B's 13-token docqa-rag-assert drafted for 19.5 ms
against 10.5 ms, prefilled in 44 ms against 34 ms. Nothing of ours gains from huge pages: the
model's weights are llama.cpp's, the document index USearch's, and a search of the context store
reads a few MB once per step.
"""
from __future__ import annotations

import numpy as np


def advise_no_huge_pages() -> None:
    """New NumPy arrays of this process get ordinary pages (NumPy's own switch, as its environment
    variable NUMPY_MADVISE_HUGEPAGE=0 sets at its import; a no-op off Linux)."""
    np._core.multiarray._set_madvise_hugepage(False)
