"""GGUF metadata read with the `gguf` package: validation, model facts, and a stable fingerprint."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ModelError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelInfo:
    path: str
    architecture: str
    name: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_ctx_train: int
    quantization: str
    n_params: int
    file_bytes: int
    chat_template: str | None
    fingerprint: str  # sha256 of header + KV metadata + tensor table (not the weights)

    def to_dict(self) -> dict:
        return asdict(self)


def check_readable_gguf(path: Path) -> None:
    """Raise ModelError (one line, naming the path) unless `path` looks like a GGUF file."""
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected a .gguf file")
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror or exc})") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (bad magic {magic!r})")


def _open_reader(path: Path):
    from gguf import GGUFReader

    check_readable_gguf(path)
    try:
        reader = GGUFReader(path, "r")
    except Exception as exc:  # the gguf parser raises assorted errors on damaged headers
        raise ModelError(f"{path}: damaged or truncated GGUF header ({type(exc).__name__}: {exc})") from None
    data_end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=reader.data_offset)
    size = path.stat().st_size
    if data_end > size:
        raise ModelError(f"{path}: truncated GGUF ({size} bytes, tensors need {data_end})")
    return reader


def _field(reader, key: str, default=None):
    field = reader.get_field(key)
    return default if field is None else field.contents()


def fingerprint_of(path: Path, header_bytes: int) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(header_bytes)).hexdigest()[:32]


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    from gguf import LlamaFileType

    path = Path(path)
    reader = _open_reader(path)
    arch = _field(reader, "general.architecture", "unknown")
    file_type = _field(reader, "general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quantization = f"type{file_type}"
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return ModelInfo(
        path=str(path.resolve()),
        architecture=arch,
        name=_field(reader, "general.name", path.stem),
        n_embd=int(_field(reader, f"{arch}.embedding_length", 0)),
        n_layer=int(_field(reader, f"{arch}.block_count", 0)),
        n_vocab=len(tokens.data) if tokens is not None else 0,
        n_ctx_train=int(_field(reader, f"{arch}.context_length", 0)),
        quantization=quantization,
        n_params=int(sum(int(t.n_elements) for t in reader.tensors)),
        file_bytes=path.stat().st_size,
        chat_template=_field(reader, "tokenizer.chat_template"),
        fingerprint=fingerprint_of(path, reader.data_offset),
    )
