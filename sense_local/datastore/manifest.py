"""The store's manifest: the single commit point of a store directory.

Everything a store holds is reachable from `manifest.json`; it is replaced atomically (write to a
temporary file, fsync, rename), so a crash at any moment leaves either the old or the new manifest,
each pointing at files that are complete.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SenseError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class StoreError(SenseError):
    """A store directory that is not a store, is damaged, or belongs to another model."""


@dataclass
class DocEntry:
    path: str
    sha256: str
    mtime: float
    size: int
    start: int  # first global token position of the document in tokens.i32
    end: int  # one past its last token
    pages: list[int] = field(default_factory=list)  # global token position where each PDF page starts
    note: str = ""
    passages_sha256: str = ""  # passages_digest of its passage rows ("" in stores from before it)
    keyed: bool = True  # its key states are in the index (False: searchable by words only, so far)

    @property
    def n_tokens(self) -> int:
        return self.end - self.start


@dataclass
class Manifest:
    model_fingerprint: str
    model_name: str
    n_embd: int
    dtype: str  # vector dtype in the index: f32 | f16 | i8
    metric: str = "cos"
    key_layer: int | None = None  # the block whose input states are the keys (None: the final norm)
    version: int = FORMAT_VERSION
    generation: int = 0  # which index-<generation>.usearch is current
    n_tokens: int = 0  # committed length of tokens.i32
    documents: dict[str, DocEntry] = field(default_factory=dict)  # by absolute path
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason, from the last run
    updated: float = 0.0
    files: dict[str, dict] = field(default_factory=dict)  # what each committed file must be (integrity.py)

    @property
    def index_file(self) -> str:
        return f"index-{self.generation}.usearch"

    def save(self, directory: Path) -> None:
        self.updated = time.time()
        data = asdict(self)
        tmp = directory / (MANIFEST + ".tmp")
        with tmp.open("w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(directory / MANIFEST)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # make the rename itself durable
        finally:
            os.close(fd)

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = directory / MANIFEST
        if not path.exists():
            raise StoreError(f"{directory}: not a sense-local store (no {MANIFEST})")
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") != FORMAT_VERSION:
                raise StoreError(f"{path}: store format {raw.get('version')} is not supported (need {FORMAT_VERSION})")
            docs = {p: DocEntry(**d) for p, d in raw.pop("documents").items()}
            manifest = cls(**raw, documents=docs)
        except StoreError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(f"{path}: corrupted manifest ({type(exc).__name__}); the store was left untouched") from None
        return manifest
