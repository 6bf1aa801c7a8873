"""Stop strings over streamed text: text goes out as soon as no stop string can still begin in it,
and the reply ends right before the first stop string (which is not included)."""
from __future__ import annotations

from collections.abc import Sequence


class StopText:
    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._held = ""  # text that may be the start of a stop string
        self.stopped = False

    def push(self, text: str) -> str:
        """The part of `text` (with what was held back) that is safe to show now."""
        if not self.stops:
            return text
        if self.stopped:
            return ""
        held = self._held + text
        cut = min((i for i in (held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return held[:cut]
        keep = max((k for s in self.stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
        self._held = held[len(held) - keep:] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """What was held back, at the end of a reply that met no stop string."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
