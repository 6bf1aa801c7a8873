"""Render a conversation turn on a terminal or a pipe: `generate`, `ask` and the line chat."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from .conversation import Finished, Prepared, ReplyEvent
from .speculative.types import TokenEvent


@dataclass
class Reply:
    prepared: Prepared
    finished: Finished
    events: list[TokenEvent] = field(default_factory=list)  # kept only when asked


def stream(events: Iterable[ReplyEvent], *, echo: bool = True, notes: bool = True, keep_events: bool = False) -> Reply:
    """Write the reply's text to stdout as it comes (when `echo`), notes to stderr; the whole turn."""
    prepared = finished = None
    kept: list[TokenEvent] = []
    for ev in events:
        if isinstance(ev, Prepared):
            prepared = ev
            for note in ev.notes if notes else ():
                print(f"note: {note}", file=sys.stderr)
        elif isinstance(ev, Finished):
            finished = ev
        else:
            if keep_events:
                kept.append(ev)
            if echo and ev.text:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
    return Reply(prepared, finished, kept)


def print_sources(sources) -> None:
    for source in sources:
        print(f"  {source.label()}: {source.snippet}")
