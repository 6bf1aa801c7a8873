"""What an index run did (IndexReport) and where its model pass stands while it runs (PassState)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class IndexReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason
    tokens: int = 0  # tokens run through the model
    seconds: float = 0.0
    eval_seconds: float = 0.0  # time spent in the model (the rest is extraction, hashing, index)
    store_vectors: int = 0
    store_bytes: int = 0
    unkeyed: int = 0  # documents searchable by words only when the run ended (cancelled: the next run goes on)
    owed: int = 0  # of those, documents an earlier run left that this run was not asked to read
    owed_tokens: int = 0

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "added": self.added, "updated": self.updated, "removed": self.removed,
            "unchanged": self.unchanged, "skipped": self.skipped, "tokens": self.tokens,
            "seconds": round(self.seconds, 3), "tok_per_s": round(self.tok_per_s, 1),
            "store_vectors": self.store_vectors, "store_bytes": self.store_bytes, "unkeyed": self.unkeyed,
            "owed": self.owed, "owed_tokens": self.owed_tokens,
        }


@dataclass(frozen=True)
class PassState:
    """Where the model's pass stands, document by document: a snapshot handed to `on_pass` each time
    it moves (a document begun, a window read, a document read, a commit). Search uses committed
    keys only, so a document read since the last commit is not yet searched by them."""

    reading: str = ""  # the document the model reads now ("" between documents)
    reading_done: int = 0  # its positions read so far
    reading_total: int = 0  # its positions to read (tokens - 1)
    read: frozenset[str] = frozenset()  # read since the last commit: keys stored, not yet durable
    saved: frozenset[str] = frozenset()  # read and committed during this pass
    queued: tuple[str, ...] = ()  # still to read, in the order the model reads them


def document_state(path: str, keyed: bool, run: PassState | None = None) -> str:
    """A document's state in words: `keyed` as the committed manifest says, `run` the pass under way
    (None when none is). The one spelling of these states for every front end."""
    if keyed or (run is not None and path in run.saved):
        return "indexed"
    if run is not None:
        if path == run.reading:
            return f"reading now ({100 * run.reading_done // max(run.reading_total, 1)}%)"
        if path in run.read:
            return "read, saved at the next commit"
        if path in run.queued:
            return "by words only (queued)"
    return "by words only (the model reads it next)"
