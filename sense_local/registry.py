"""The model registry (models/registry.json): names -> where the GGUF comes from, its file and sha256.

Weights are provisioned at set-up time by `models/fetch.py`; at run time we only resolve paths
and never touch the network. Four names are roles rather than models: `default` (the chat model
every front end opens), `test` (the fast model of the unit tests), `probe` (set-up's smoke decode) and
`embedding` (the sentence-embedding model /v1/embeddings loads).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError, SenseError

REPO_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
ROLES = ("default", "test", "probe", "embedding")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    file: str  # file name under the models directory
    sha256: str
    size: int | None  # bytes, when the registry states it
    license: str
    source: str  # where set-up gets it: a wheel, N wheel parts, or a requantization
    why: str = ""  # when to pick it
    kind: str = "chat"  # "chat", or "embedding": a model only /v1/embeddings loads

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    @property
    def present(self) -> bool:
        return self.path.is_file()


@dataclass(frozen=True)
class Registry:
    roles: dict[str, str]  # role -> model name
    entries: dict[str, ModelEntry]  # by name

    @property
    def default(self) -> str:
        return self.roles["default"]

    def name_of(self, name_or_role: str) -> str | None:
        if name_or_role in self.entries:
            return name_or_role
        return self.roles.get(name_or_role)


def models_dir() -> Path:
    return Path(os.environ.get("SENSE_MODELS_DIR", REPO_MODELS_DIR))


def _source(e: dict) -> str:
    if "parts" in e:
        return f"{e['parts']['count']} PyPI wheel parts ({e['parts']['package'].format(n='N', nn='NN')})"
    if "convert" in e:
        return f"PyPI wheel {e['package']} (safetensors), written as GGUF at set-up"
    if "derived_from" in e:
        return f"{e['derived_from']} requantized to {e['quantize']} at set-up"
    return f"PyPI wheel {e['package']}"


def load_registry() -> Registry:
    raw = json.loads((REPO_MODELS_DIR / "registry.json").read_text())
    entries = {
        name: ModelEntry(name, e["file"], e["sha256"], e.get("size"), e.get("license", ""), _source(e),
                         e.get("why", ""), e.get("kind", "chat"))
        for name, e in raw["models"].items()
    }
    return Registry({role: raw[role] for role in ROLES if role in raw}, entries)


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """Resolve a model argument: a path, a registry name or role, a model found on disk by
    `sense-local models` (Ollama, LM Studio, Hugging Face cache, llama.cpp cache), $SENSE_MODEL,
    or the default model."""
    if model is None:
        model = os.environ.get("SENSE_MODEL") or "default"
    registry = load_registry()
    name = registry.name_of(str(model))
    if name is not None:
        entry = registry.entries[name]
        if not entry.present:
            raise ModelError(f"{entry.path}: model '{name}' is not provisioned; run scripts/setup "
                             f"(or .venv/bin/python models/fetch.py {name})")
        return entry.path
    path = Path(model).expanduser()
    text = str(model)
    looks_found = text.split(":", 1)[0] in ("ollama", "lmstudio", "hf", "llama.cpp")
    if not path.exists() and (looks_found or (os.sep not in text and not text.endswith(".gguf"))):
        from .model_discovery import find_local_model

        found = find_local_model(text)
        if found is not None:
            return found
        raise ModelError(f"unknown model '{model}': not a file, a registry name or a model found on disk "
                         "(`sense-local models` lists them)")
    return path


def names_with_fingerprint(fingerprint: str) -> list[str]:
    """Registry and discovered models whose GGUF header has this fingerprint (which `--model` to use)."""
    from .model_discovery import discover
    from .model_info import read_model_info

    candidates = [(e.name, e.path) for e in load_registry().entries.values() if e.present]
    candidates += [(m.name, m.path) for m in discover()]
    names = []
    for name, path in candidates:
        try:
            if read_model_info(path).fingerprint == fingerprint:
                names.append(name)
        except SenseError:
            continue
    return names
