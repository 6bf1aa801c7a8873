"""GGUF metadata: validation, model facts, and a stable fingerprint (header + tensor table hash)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
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


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFHeader:
    metadata: dict  # scalar and string values; for long arrays, their length under "<key>#len"
    tensors: list[tuple[str, int, int, int]]  # (name, n_elements, ggml type, offset in the data section)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor name -> dims (GGUF order)
    data_offset: int = 0  # where tensor data starts: header + KV + tensor table, aligned
    data_end: int = 0  # where the last tensor's data ends (the file must be at least this long)


def scan_header(path: Path) -> GGUFHeader:
    """Read a GGUF header without touching the weights (GGUFReader also parses every token
    string into numpy views, which takes seconds for a 49k vocabulary; this takes milliseconds).
    Type constants and block sizes come from the `gguf` package."""
    import struct

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with path.open("rb") as f:
        buf = f.read(1 << 20)
        pos = 0

        def need(n: int) -> None:
            nonlocal buf
            if pos + n > len(buf):
                more = f.read(max(n, 1 << 20))
                if pos + n > len(buf) + len(more):
                    raise ValueError("header ends early")
                buf += more

        def take(fmt: str):
            nonlocal pos
            size = struct.calcsize(fmt)
            need(size)
            (value,) = struct.unpack_from(fmt, buf, pos)
            pos += size
            return value

        def take_str() -> str:
            nonlocal pos
            n = take("<Q")
            need(n)
            value = buf[pos : pos + n].decode("utf-8", errors="replace")
            pos += n
            return value

        def skip_value(vtype: int) -> None:
            nonlocal pos
            if vtype == _STRING:
                n = take("<Q")
                need(n)
                pos += n
            else:
                size = struct.calcsize(_SCALAR[vtype])
                need(size)
                pos += size

        magic, version = buf[:4], struct.unpack_from("<I", buf, 4)[0]
        if magic != GGUF_MAGIC or version < 2:
            raise ValueError(f"unsupported GGUF version {version}")
        pos = 8
        n_tensors, n_kv = take("<Q"), take("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ValueError("implausible tensor or key count")
        meta: dict = {}
        for _ in range(n_kv):
            key = take_str()
            vtype = take("<I")
            if vtype == _STRING:
                meta[key] = take_str()
            elif vtype == _ARRAY:
                itype, count = take("<I"), take("<Q")
                meta[key + "#len"] = count
                if itype == _STRING:
                    for _ in range(count):
                        skip_value(_STRING)
                else:
                    size = struct.calcsize(_SCALAR[itype]) * count
                    need(size)
                    pos += size
            elif vtype in _SCALAR:
                meta[key] = take(_SCALAR[vtype])
            else:
                raise ValueError(f"unknown value type {vtype} for key {key}")
        tensors = []
        shapes: dict[str, tuple[int, ...]] = {}
        for _ in range(n_tensors):
            name = take_str()
            dims = tuple(take("<Q") for _ in range(take("<I")))
            n_el = 1
            for d in dims:
                n_el *= d
            ttype, offset = take("<I"), take("<Q")
            tensors.append((name, n_el, ttype, offset))
            shapes[name] = dims
        align = int(meta.get("general.alignment", 32))
        data_offset = pos + (-pos % align)
    sizes = []
    for name, n_el, ttype, offset in tensors:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        sizes.append(offset + n_el // block * type_size)
    return GGUFHeader(meta, tensors, shapes, data_offset, data_offset + max(sizes, default=0))


def _read_header(path: Path) -> GGUFHeader:
    check_readable_gguf(path)
    try:
        header = scan_header(path)
    except Exception as exc:  # any damage in the header: struct errors, bad types, bad UTF-8...
        raise ModelError(f"{path}: damaged or truncated GGUF header ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    if header.data_end > size:
        raise ModelError(f"{path}: truncated GGUF ({size} bytes, tensors need {header.data_end})")
    return header


def fingerprint_of(path: Path, header_bytes: int) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(header_bytes)).hexdigest()[:32]


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    from gguf import LlamaFileType

    path = Path(path)
    header = _read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture", "unknown")
    file_type = meta.get("general.file_type")
    try:
        quantization = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else "unknown"
    except ValueError:
        quantization = f"type{file_type}"
    return ModelInfo(
        path=str(path.resolve()),
        architecture=arch,
        name=meta.get("general.name", path.stem),
        n_embd=int(meta.get(f"{arch}.embedding_length", 0)),
        n_layer=int(meta.get(f"{arch}.block_count", 0)),
        n_vocab=int(meta.get("tokenizer.ggml.tokens#len", 0)),
        n_ctx_train=int(meta.get(f"{arch}.context_length", 0)),
        quantization=quantization,
        n_params=sum(n for _, n, _, _ in header.tensors),
        file_bytes=path.stat().st_size,
        chat_template=meta.get("tokenizer.chat_template"),
        fingerprint=fingerprint_of(path, header.data_offset),
    )
