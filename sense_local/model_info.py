"""GGUF metadata: validation, model facts, and a stable fingerprint (header + tensor table hash)."""
from __future__ import annotations

import hashlib
import os
import struct
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
_LENGTH = struct.Struct("<Q")  # a string's length prefix


@dataclass
class GGUFHeader:
    metadata: dict  # scalar and string values; for long arrays, their length under "<key>#len"
    tensors: list[tuple[str, int, int, int]]  # (name, n_elements, ggml type, offset in the data section)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor name -> dims (GGUF order)
    data_offset: int = 0  # where tensor data starts: header + KV + tensor table, aligned
    data_end: int = 0  # where the last tensor's data ends (the file must be at least this long)


class _HeaderCursor:
    """Reads a GGUF header's values in order from a file, 1 MiB at a time."""

    def __init__(self, f):
        self.f = f
        self.buf = f.read(1 << 20)
        self.pos = 0

    def need(self, n: int) -> None:
        self._upto(self.pos + n)

    def _upto(self, end: int) -> None:
        """The buffer holds the file up to `end` (ValueError where the file ends first)."""
        if end > len(self.buf):
            more = self.f.read(max(end - len(self.buf), 1 << 20))
            if end > len(self.buf) + len(more):
                raise ValueError("header ends early")
            self.buf += more

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        self.need(size)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def take_str(self) -> str:
        n = self.take("<Q")
        self.need(n)
        value = self.buf[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return value

    def skip_strings(self, count: int) -> None:
        """Step over `count` length-prefixed strings in one loop: a tokenizer's vocabulary and merges
        are 300k of them on Qwen2.5, which a call per string took 116 ms to step over, at every start."""
        pos, length = self.pos, _LENGTH.unpack_from
        for _ in range(count):
            if pos + 8 > len(self.buf):
                self._upto(pos + 8)
            pos += 8 + length(self.buf, pos)[0]
        self._upto(pos)
        self.pos = pos


def _read_metadata(cursor: _HeaderCursor, n_kv: int) -> dict:
    """The KV section: scalars and strings by key, arrays as their length under "<key>#len"."""
    meta: dict = {}
    for _ in range(n_kv):
        key = cursor.take_str()
        vtype = cursor.take("<I")
        if vtype == _STRING:
            meta[key] = cursor.take_str()
        elif vtype == _ARRAY:
            itype, count = cursor.take("<I"), cursor.take("<Q")
            meta[key + "#len"] = count
            if itype == _STRING:
                cursor.skip_strings(count)
            else:
                cursor.skip(struct.calcsize(_SCALAR[itype]) * count)
        elif vtype in _SCALAR:
            meta[key] = cursor.take(_SCALAR[vtype])
        else:
            raise ValueError(f"unknown value type {vtype} for key {key}")
    return meta


def _read_tensors(cursor: _HeaderCursor, n_tensors: int) -> tuple[list, dict]:
    """The tensor table: (name, n_elements, ggml type, offset) per tensor, and each one's dims."""
    tensors = []
    shapes: dict[str, tuple[int, ...]] = {}
    for _ in range(n_tensors):
        name = cursor.take_str()
        dims = tuple(cursor.take("<Q") for _ in range(cursor.take("<I")))
        n_el = 1
        for d in dims:
            n_el *= d
        ttype, offset = cursor.take("<I"), cursor.take("<Q")
        tensors.append((name, n_el, ttype, offset))
        shapes[name] = dims
    return tensors, shapes


def _data_size(tensors: list) -> int:
    """Bytes from the data section's start to the end of the last tensor's data."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    sizes = []
    for name, n_el, ttype, offset in tensors:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        sizes.append(offset + n_el // block * type_size)
    return max(sizes, default=0)


def scan_header(path: Path) -> GGUFHeader:
    """Read a GGUF header without touching the weights (GGUFReader also parses every token
    string into numpy views, which takes seconds for a 49k vocabulary; this takes milliseconds).
    Type constants and block sizes come from the `gguf` package."""
    with path.open("rb") as f:
        cursor = _HeaderCursor(f)
        magic, version = cursor.buf[:4], struct.unpack_from("<I", cursor.buf, 4)[0]
        if magic != GGUF_MAGIC or version < 2:
            raise ValueError(f"unsupported GGUF version {version}")
        cursor.pos = 8
        n_tensors, n_kv = cursor.take("<Q"), cursor.take("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ValueError("implausible tensor or key count")
        meta = _read_metadata(cursor, n_kv)
        tensors, shapes = _read_tensors(cursor, n_tensors)
        align = int(meta.get("general.alignment", 32))
        data_offset = cursor.pos + (-cursor.pos % align)
    return GGUFHeader(meta, tensors, shapes, data_offset, data_offset + _data_size(tensors))


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
