"""The model's own token-embedding matrix (`token_embd.weight`), dequantized once and cached.

Read straight from the GGUF's data section with the offsets from our header scan and dequantized
with the `gguf` package; stored unit-normalised as float16 in the cache directory, keyed by the
model fingerprint, so later loads are a memory map.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_info import read_model_info, scan_header
from ..paths import cache_dir


def token_embeddings(model_path: str | Path) -> np.ndarray:
    """[n_vocab, n_embd] float16 unit rows of the token-embedding matrix (memory-mapped)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    path = Path(model_path)
    info = read_model_info(path)
    cached = cache_dir() / "token-embeddings" / f"{info.fingerprint}.npy"
    if cached.exists():
        return np.load(cached, mmap_mode="r")
    header = scan_header(path)
    entry = next(t for t in header.tensors if t[0] == "token_embd.weight")
    _, n_el, ttype, offset = entry
    n_embd, n_vocab = header.shapes["token_embd.weight"][:2]
    qtype = GGMLQuantizationType(ttype)
    block, type_size = GGML_QUANT_SIZES[qtype]
    row_bytes = n_embd // block * type_size
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=header.data_offset + offset, shape=(n_vocab, row_bytes))
    rows = []
    for s in range(0, n_vocab, 4096):  # chunks keep the float32 intermediate small
        chunk = np.asarray(dequantize(np.asarray(raw[s : s + 4096]), qtype), np.float32).reshape(-1, n_embd)
        chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
        rows.append(chunk.astype(np.float16))
    matrix = np.concatenate(rows)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npy")
    np.save(tmp, matrix)
    tmp.replace(cached)
    return np.load(cached, mmap_mode="r")
