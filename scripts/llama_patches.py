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

# The CPU backend's flash attention (on by default, as in llama-server) runs a decode of fewer than
# 64 rows one row at a time: every row reads the whole KV cache again (F16, per query head), so a
# verification of k draft tokens after a long context costs k passes over it. From 64 rows it runs
# tiled (a 64-row tile of queries against 64-position tiles of K and V converted to F32 once, two
# small GEMMs), its tile padded to 64 rows. Here the tiled kernel multiplies only the tile's rows
# and runs from TILED_MIN rows (8; SENSE_FA_TILED_MIN overrides it per process, for an A/B; 64 is
# the source's) where the KV view is 512 or more. A k-row decode's ms after 1,536 tokens of context
# (`benchmarks.context_cost_curve --ab SENSE_FA_TILED_MIN=64,8`): k = 16 0.84x, 32 0.74x on the
# 1.5B, 0.75x / 0.61x on the 135M; one-token decodes and prompts (64+ rows) as before. Below 8 rows
# the row-at-a-time kernel stays (at 2-4 rows the tiled one cost the 135M 30-45% more), and after
# short contexts too, where its rows equal one-token decodes' (the suite asserts it). README, "Flash
# attention for a verification's rows".
FA_TILED = Patch(
    "fa-tiled-small",
    "ggml/src/ggml-cpu/ops.cpp",
    (
        ('#include "vec.h"\n',
         '#include "vec.h"\n#include <cstdlib>\n\n'
         '// sense-local: decodes of this many rows or more run the tiled flash-attention kernel (64 upstream)\n'
         'static int64_t sense_fa_tiled_min() {\n'
         '    static const int64_t rows = getenv("SENSE_FA_TILED_MIN") ? atoll(getenv("SENSE_FA_TILED_MIN")) : 8;\n'
         '    return rows;\n'
         '}\n', 1),
        # where the context is long (a KV view of 512 or more, where a one-token decode already takes
        # its own split-KV path): a short context's rows stay those of the row-at-a-time kernel
        ("neq1 >= Q_TILE_SZ);", "(neq1 >= Q_TILE_SZ || (neq1 >= sense_fa_tiled_min() && nek1 >= 512)));", 1),
        # the tile's own rows only (the source runs all Q_TILE_SZ, the rows past tile_rows zeros)
        ("for (int tq = 0; tq < Q_TILE_SZ; tq++) {", "for (int tq = 0; tq < tile_rows; tq++) {", 3),
        ("simd_gemm(KQ, (const float *)Q_q, K_f32, Q_TILE_SZ, DK, KV_TILE_SZ);",
         "simd_gemm(KQ, (const float *)Q_q, K_f32, tile_rows, DK, KV_TILE_SZ);", 1),
        ("ggml_vec_scale_f32(Q_TILE_SZ * KV_TILE_SZ, KQ, scale);", "ggml_vec_scale_f32(tile_rows * KV_TILE_SZ, KQ, scale);", 1),
        ("simd_gemm(VKQ32, KQ, V32, Q_TILE_SZ, KV_TILE_SZ, DV);", "simd_gemm(VKQ32, KQ, V32, tile_rows, KV_TILE_SZ, DV);", 1),
    ),
)

PATCHES = (ALIGNED_WORK_BUFFER, HUGE_PAGES, FA_TILED)


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
