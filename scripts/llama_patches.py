"""Changes our llama-cpp-python build makes to the llama.cpp it vendors (scripts/llama_build.py applies
them to the unpacked sdist before building the wheel; llama-server, the bench's peer, is built from
the same source without them, as its users get it).

Each patch replaces exact text a given number of times; a source that does not hold it (another
llama-cpp-python version) stops the build with a one-line error rather than building something else.

Stdlib only: it runs before sense-local itself is installed.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Patch:
    name: str
    path: str  # relative to the vendored llama.cpp
    edits: tuple[tuple[str, str, int], ...]  # (old text, new text, times it occurs)


# The CPU backend's work buffer (where a decode's activations are quantized for the matrix products)
# came from `new uint8_t[]`: 16-byte aligned by glibc's malloc, so one context in four found it on a
# 64-byte line by chance. On the AMD EPYC (AVX-512) such a context read prompts ~10% faster on the
# 135M (835 against 750 tok/s) and ~6% on the 1.5B, for its whole life: the per-context "draw" of
# earlier READMEs. ggml_aligned_malloc (64 bytes, what ggml's other buffers use) makes every context
# the fast one. Measured with benchmarks/prefill_contexts.py (README, "The CPU work buffer's alignment").
ALIGNED_WORK_BUFFER = Patch(
    "aligned-work-buffer",
    "ggml/src/ggml-cpu/ggml-cpu.cpp",
    (
        ("delete[] cpu_ctx->work_data;", "ggml_aligned_free(cpu_ctx->work_data, cpu_ctx->work_size);", 2),
        ("cpu_ctx->work_data = new uint8_t[cplan.work_size];",
         "cpu_ctx->work_data = (uint8_t *) ggml_aligned_malloc(cplan.work_size);", 1),
        ("cpu_plan->cplan.work_data = new uint8_t[cpu_plan->cplan.work_size];",
         "cpu_plan->cplan.work_data = (uint8_t *) ggml_aligned_malloc(cpu_plan->cplan.work_size);", 1),
        ("delete[] cpu_plan->cplan.work_data;",
         "ggml_aligned_free(cpu_plan->cplan.work_data, cpu_plan->cplan.work_size);", 1),
    ),
)

# ggml's CPU buffers (the weights llama.cpp repacks on load, the KV cache, compute and work buffers)
# came in 4 KB pages: the 1.5B's ~1 GB of repacked weights, read whole by every one-token decode,
# missed the TLB all the way. Buffers of 2 MB or more now ask for transparent huge pages (madvise:
# honoured where THP is "always" or "madvise", the usual defaults; nothing changes where it is
# "never"). Their start stays where malloc put it: aligning every buffer to 2 MB as well made
# one-token decodes slower (buffers on the same cache sets). Measured (README, "Huge pages for
# ggml's buffers"): one-token decodes 1.07x on the 1.5B, 1.03x on the 135M (whose Q8_0 weights stay
# in the file's mapping).
HUGE_PAGES = Patch(
    "huge-pages",
    "ggml/src/ggml.c",
    (
        ("void * ggml_aligned_malloc(size_t size) {",
         "#if defined(__linux__)\n#include <sys/mman.h>\n#endif\n\nvoid * ggml_aligned_malloc(size_t size) {", 1),
        ("  #else\n    int result = posix_memalign(&aligned_memory, alignment, size);\n  #endif",
         "  #elif defined(__linux__)\n"
         "    int result = posix_memalign(&aligned_memory, alignment, size);\n"
         "    if (result == 0 && size >= (2u << 20)) {  // sense-local: a large buffer on 2 MB pages where the kernel has them\n"
         "        const uintptr_t page = 4096, from = ((uintptr_t) aligned_memory + page - 1) & ~(page - 1);\n"
         "        madvise((void *) from, (((uintptr_t) aligned_memory + size) & ~(page - 1)) - from, MADV_HUGEPAGE);\n"
         "    }\n"
         "  #else\n    int result = posix_memalign(&aligned_memory, alignment, size);\n  #endif", 1),
    ),
)

PATCHES = (ALIGNED_WORK_BUFFER, HUGE_PAGES)


def digest() -> str:
    """Names the patch set in the wheel's build key: a changed patch is a new build."""
    blob = json.dumps([(p.name, p.path, p.edits) for p in PATCHES])
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def apply(llama_cpp_root: Path) -> list[str]:
    """Apply every patch to the vendored llama.cpp at `llama_cpp_root`; their names. ValueError names
    the first edit whose text the source does not hold as many times as expected."""
    for patch in PATCHES:
        file = llama_cpp_root / patch.path
        text = file.read_text()
        for old, new, times in patch.edits:
            found = text.count(old)
            if found != times:
                raise ValueError(f"patch {patch.name}: {patch.path} holds {old!r} {found} times, expected {times}")
            text = text.replace(old, new)
        file.write_text(text)
    return [p.name for p in PATCHES]
