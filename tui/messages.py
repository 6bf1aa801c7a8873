"""The messages the TUI's widgets, screens and workers post to each other (toolong's layout: one
file, each a dataclass). Workers post from their threads; Textual hands each to the
`on_<snake_case_name>` handler of the node it is posted to, and the bubbling ones on up to the app."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from sense_local.conversation import Finished
from sense_local.speculative.types import GenerationStats


# ---------------------------------------------------------------- the chat (chat.py) and the app
@dataclass
class PromptSubmitted(Message):
    """The prompt box's text, sent with Enter (the box is cleared)."""

    text: str


@dataclass
class EngineReady(Message):
    """The model finished loading, or could not be loaded (the app's loading worker)."""

    error: str | None = None  # no model: nothing works
    store_error: str | None = None  # the model runs, the documents could not be opened


@dataclass
class Reading(Message):
    """A long prompt being read: `done` of its `total` tokens evaluated (or reused) at time `t`."""

    done: int
    total: int
    t: float  # time.perf_counter()


@dataclass
class Grounded(Message):
    """The passages a reply is grounded on (sent before its first token), and notes for the user."""

    sources: list[dict]  # Source.to_dict() each
    notes: list[str]


@dataclass
class TokensBatch(Message):
    """The reply's tokens since the previous batch (posted at most once a frame), with its figures."""

    spans: list  # [(text, source, soft)], one per token event
    stats: GenerationStats  # the reply's figures so far (live_stats), or its final ones in the last batch
    t: float  # time.perf_counter() when posted


@dataclass
class GenerationDone(Message):
    """The reply ended: `finished` holds its text and figures, or `error` says why there is none."""

    finished: Finished | None
    error: str | None = None


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
