"""The indexing marker: `<store>/indexing.json` holds the pid (and start time) of the indexer that
writes the store. Readers use it to say that a store is still being indexed; a marker whose process
is gone means an indexer died holding the store (an open then re-hashes everything: integrity.py)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

INDEXING = "indexing.json"


def _read(directory: Path) -> dict | None:
    try:
        status = json.loads((directory / INDEXING).read_text())
        int(status["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status


def indexing_status(directory: Path) -> dict | None:
    """{"pid", "started"} while an indexer is running on the store, else None."""
    status = _read(directory)
    try:
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status


def mark_indexing(directory: Path, running: bool) -> None:
    """Leave (atomically) or remove this process's marker."""
    path = directory / INDEXING
    if running:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "started": time.time()}))
        tmp.replace(path)
    else:
        path.unlink(missing_ok=True)


def unclean_shutdown(directory: Path) -> bool:
    """An indexer's marker left behind by a process that is gone: it died while holding the store."""
    status = _read(directory)
    if status is None:
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
