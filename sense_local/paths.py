"""Where sense-local keeps its data and caches ($SENSE_HOME overrides both)."""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    if os.environ.get("SENSE_HOME"):
        return Path(os.environ["SENSE_HOME"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "sense-local"


def cache_dir() -> Path:
    if os.environ.get("SENSE_HOME"):
        return Path(os.environ["SENSE_HOME"]) / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sense-local"


def default_store() -> Path:
    """The document store `index`, `ask` and the chat use when none is named."""
    return data_home() / "stores" / "default"
