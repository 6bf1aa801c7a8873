"""GGUF models the user already has, where other local tools keep them.

- Ollama: `$OLLAMA_MODELS` or ~/.ollama/models; manifests/<registry>/<namespace>/<model>/<tag> are
  JSON manifests whose layer of media type `application/vnd.ollama.image.model` names a blob
  (blobs/sha256-<hex>), which is a GGUF file. Listed as `ollama:<model>:<tag>`
  (`ollama:<namespace>/<model>:<tag>` outside the default `library` namespace).
- LM Studio: ~/.lmstudio/models and ~/.cache/lm-studio/models, <publisher>/<repo>/<file>.gguf.
  Listed as `lmstudio:<publisher>/<repo>/<file>`.
- Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub` or ~/.cache/huggingface/hub;
  models--<org>--<repo>/snapshots/<revision>/<file>.gguf. Listed as `hf:<org>/<repo>/<file>`.
- llama.cpp's own download cache: `$LLAMA_CACHE` or ~/.cache/llama.cpp, *.gguf. Listed as `llama.cpp:<file>`.

Facts (architecture, quantization, size) come from the GGUF header, never from the weights. Only
files that start with the GGUF magic are listed; a directory that cannot be read is skipped.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"


@dataclass(frozen=True)
class FoundModel:
    name: str  # what `--model` accepts, e.g. ollama:llama3.2:3b
    path: Path
    tool: str  # ollama, lmstudio, hf, llama.cpp


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def _ollama(root: Path) -> list[FoundModel]:
    manifests = root / "manifests"
    found = []
    if not manifests.is_dir():
        return found
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()):
        try:
            doc = json.loads(manifest.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        layers = doc.get("layers") if isinstance(doc, dict) else None
        digest = next((layer.get("digest") for layer in layers or [] if isinstance(layer, dict)
                       and layer.get("mediaType") == OLLAMA_MODEL_LAYER), None)
        if not isinstance(digest, str):
            continue
        blob = root / "blobs" / digest.replace(":", "-")
        if not _is_gguf(blob):
            continue
        parts = manifest.relative_to(manifests).parts  # registry, namespace, model, tag
        if len(parts) < 3:
            continue
        namespace, model, tag = parts[-3], parts[-2], parts[-1]
        label = model if namespace == "library" else f"{namespace}/{model}"
        found.append(FoundModel(f"ollama:{label}:{tag}", blob, "ollama"))
    return found


def _gguf_tree(root: Path, tool: str, prefix: str, depth: int) -> list[FoundModel]:
    found = []
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*.gguf")):
        rel = path.relative_to(root)
        if len(rel.parts) > depth or not _is_gguf(path):
            continue
        found.append(FoundModel(f"{prefix}:{rel.as_posix()}", path, tool))
    return found


def _hf(root: Path) -> list[FoundModel]:
    found = []
    if not root.is_dir():
        return found
    for repo in sorted(root.glob("models--*")):
        label = repo.name[len("models--"):].replace("--", "/")
        for path in sorted((repo / "snapshots").glob("*/**/*.gguf")):
            if _is_gguf(path):
                rel = path.relative_to(repo / "snapshots").parts[1:]  # drop the revision
                found.append(FoundModel(f"hf:{label}/{'/'.join(rel)}", path, "hf"))
    return found


def search_roots() -> dict[str, list[Path]]:
    home = _home()
    hf = os.environ.get("HF_HUB_CACHE") or (Path(os.environ["HF_HOME"]) / "hub" if os.environ.get("HF_HOME") else None)
    return {
        "ollama": [Path(os.environ["OLLAMA_MODELS"]) if os.environ.get("OLLAMA_MODELS") else home / ".ollama" / "models"],
        "lmstudio": [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"],
        "hf": [Path(hf) if hf else home / ".cache" / "huggingface" / "hub"],
        "llama.cpp": [Path(os.environ["LLAMA_CACHE"]) if os.environ.get("LLAMA_CACHE") else home / ".cache" / "llama.cpp"],
    }


def discover() -> list[FoundModel]:
    """Every GGUF the other tools keep, once per name (the first root wins)."""
    roots = search_roots()
    found: list[FoundModel] = []
    for root in roots["ollama"]:
        found += _ollama(root)
    for root in roots["lmstudio"]:
        found += _gguf_tree(root, "lmstudio", "lmstudio", depth=3)
    for root in roots["hf"]:
        found += _hf(root)
    for root in roots["llama.cpp"]:
        found += _gguf_tree(root, "llama.cpp", "llama.cpp", depth=1)
    seen, unique = set(), []
    for model in found:
        if model.name not in seen:
            seen.add(model.name)
            unique.append(model)
    return unique


def find_local_model(name: str) -> Path | None:
    """The path of a model listed under `name` (an `ollama:` name may leave out `:latest`)."""
    wanted = {name}
    if name.startswith("ollama:") and name.count(":") == 1:
        wanted.add(name + ":latest")
    for model in discover():
        if model.name in wanted:
            return model.path
    return None

