"""Write a sentence-transformers BERT model (safetensors + tokenizer.json) as a GGUF llama.cpp loads.

Set-up time only (models/fetch.py calls it for registry entries with `"convert": "bert"`): no
package on the index ships a GGUF embedding model, but one ships all-MiniLM-L6-v2's own weights,
so set-up writes them out once, as llama.cpp's converter (conversion/bert.py) does for a
`BertModel`, without torch or transformers: the safetensors header is read with json, the tensors
with numpy, the file written with the `gguf` package. Matrices become F16; vectors (norms, biases)
and the position and token-type embeddings stay F32, as llama.cpp's converter keeps them. The
pooling rule comes from the model's own sentence-transformers config (1_Pooling); the vocabulary is
WordPiece written in llama.cpp's "phantom space" form (a word-initial piece gets
U+2581 in front, a `##` continuation loses its `##`, control tokens stay as they are).
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
KEPT_F32 = ("position_embd.weight", "token_types.weight")  # added to F32 rows: llama.cpp wants them F32 too


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, as numpy arrays (a little-endian file, as they all are)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(raw, DTYPES[spec["dtype"]], (end - start) // np.dtype(DTYPES[spec["dtype"]]).itemsize,
                                  base + start).reshape(spec["shape"])
    return out


def pooling_type(model_dir: Path):
    """The pooling the model's sentence-transformers modules define (MEAN, CLS or LAST)."""
    import gguf

    modules = json.loads((model_dir / "modules.json").read_text())
    path = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    cfg = json.loads((model_dir / path / "config.json").read_text())
    if cfg.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if cfg.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    if cfg.get("pooling_mode_lasttoken"):
        return gguf.PoolingType.LAST
    raise ValueError(f"{model_dir}: pooling {cfg} has no llama.cpp equivalent")


def vocabulary(model_dir: Path, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens in id order, in phantom-space form, and their types (control for the special ones)."""
    import gguf

    tok = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if tok["model"]["type"] != "WordPiece":
        raise ValueError(f"{model_dir}: a {tok['model']['type']} tokenizer, not WordPiece")
    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    special = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    tokens, types = [], []
    for i in range(n_vocab):
        t = by_id.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(t)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def convert(model_dir: Path, out: Path, name: str) -> None:
    """Write the BERT model in `model_dir` (a sentence-transformers folder) to `out` as an F16 GGUF."""
    import gguf

    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "bert":
        raise ValueError(f"{model_dir}: model_type {cfg.get('model_type')!r}, not bert")
    n_layer = cfg["num_hidden_layers"]
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # it notes that [CLS] has no GGUF key: llama.cpp's
    # BERT vocabulary takes [CLS] as its beginning token, which SpecialVocab writes
    tensors = read_safetensors(model_dir / "model.safetensors")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)

    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    w.add_name(name)
    w.add_block_count(n_layer)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_eps(cfg["layer_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_causal_attention(False)
    w.add_pooling_type(pooling_type(model_dir))

    tokens, types = vocabulary(model_dir, cfg["vocab_size"])
    w.add_token_type_count(cfg.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(model_dir, n_vocab=len(tokens)).add_to_gguf(w)

    for hf_name, data in tensors.items():
        if hf_name in DROPPED:
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"{model_dir}: no GGUF name for tensor {hf_name}")
        data = data.astype(np.float16 if data.ndim >= 2 and new not in KEPT_F32 else np.float32)
        w.add_tensor(new, np.ascontiguousarray(data))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
