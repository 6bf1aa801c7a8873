"""The messages the TUI's widgets, screens and workers post to each other (toolong's layout: one
file, each a dataclass). Workers post from their threads; Textual hands each to the
`on_<snake_case_name>` handler of the node it is posted to, and the bubbling ones on up to the app."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


# ---------------------------------------------------------------- the documents screen (documents.py)
@dataclass
class IndexProgress(Message):
    """The model pass of an indexing run: `done` of `total` tokens, now in `path`, at `rate` tok/s so far."""

    done: int
    total: int
    path: str
    rate: float


@dataclass
class IndexPass(Message):
    """The model's pass moved on: a document begun, read, or committed."""

    state: object  # sense_local.datastore.PassState


@dataclass
class IndexSearchable(Message):
    """The new documents are committed with their words: grounded chat finds them before their keys."""

    n_documents: int


@dataclass
class IndexFinished(Message):
    """The indexing run ended: `summary` of what it did, or `error`."""

    summary: str
    error: str | None = None


@dataclass
class DocumentsChanged(Message):
    """Documents were indexed into or removed from the store (it bubbles up to the app)."""

    store_path: str
