"""A disk that fills (or a file-size limit met) while a store is written: recognised whichever layer
ran out of room (the OS, SQLite, USearch), the store put back to its last commit (uncommitted bytes
removed, which also gives the room back), and one line for the user."""
from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3

from .manifest import StoreError

NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # full disk, quota, file-size limit (RLIMIT_FSIZE)
NO_ROOM_WORDS = ("disk is full", "no space left", "file too large", "quota exceeded")  # SQLite's and USearch's


def out_of_room(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    if isinstance(exc, (sqlite3.OperationalError, RuntimeError)):
        text = str(exc).lower()
        return any(words in text for words in NO_ROOM_WORDS)
    return False


def room_error(directory: os.PathLike, needed: int) -> OSError | None:
    """Why a file of `needed` bytes cannot be written in `directory`, for writers that do not say
    (USearch's save: "Failed to serialize into stream"), or None when there is room for it."""
    if shutil.disk_usage(directory).free < needed:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < needed:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    return None


def reason(exc: BaseException) -> str:
    """'No space left on device', 'database or disk is full', ...: the layer's own words, one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def disk_full_error(store, exc: BaseException) -> StoreError:
    """Put `store` (a StoreWriter) back to its last commit and say so in one line."""
    why = reason(exc)
    try:
        committed = store.discard_uncommitted()
    except (OSError, sqlite3.Error, StoreError):
        return StoreError(f"{store.dir}: no room to write ({why}) and the store's unfinished files could not "
                          "be removed; free some space, then the next index run tidies it")
    owed = sum(not d.keyed for d in committed.documents.values())
    kept = f"{len(committed.documents)} documents" + (f", {owed} of them by words only" if owed else "")
    return StoreError(f"{store.dir}: no room to write ({why}); the store is as of its last commit ({kept}); "
                      "free some space and index again")

