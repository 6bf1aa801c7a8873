"""The chat's status bar, and what it shows: a reply's figures as the runtime defines them
(GenerationStats: tok/s after the first token, prefill apart; tau; accepted / drafted), the method,
the model and the documents."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from textual.widgets import Static

from sense_local.speculative.types import GenerationStats


def live_stats(stats: GenerationStats, first_token_at: float, now: float) -> GenerationStats:
    """A streaming reply's figures so far, timed as GenerationStats times a finished reply: its decode
    time counts from the first token (the prompt's reading apart), so `tok_per_s` and `tau` are the
    runtime's own definitions, live. `stats` is the decoder's (it counts as it goes); a copy comes back."""
    return dataclasses.replace(stats, t_total=now - first_token_at)


def reply_figures(stats: GenerationStats | None) -> dict[str, str | None]:
    """The status bar's figures of a reply (None: not shown); the speed under the rule of the figures
    under a finished reply (Finished.summary): none for a reply of one token."""
    if stats is None:
        return {"tok/s": None, "tau": None, "accepted": None}
    return {"tok/s": f"{stats.tok_per_s:.1f}" if stats.tokens > 1 and stats.tok_per_s > 0 else None,
            "tau": f"{stats.tau:.2f}", "accepted": f"{stats.accepted}/{stats.drafted}"}


def documents_field(store, store_path: str | None, engine) -> dict[str, str]:
    """The status bar's word on the documents, true for the loaded model: the store's name when it
    is in use, else why there are none."""
    from sense_local.datastore.manifest import Manifest, StoreError

    if store is not None:
        return {"store": Path(store_path).name}
    if not store_path or engine is None:
        return {"store": "none"}
    try:
        manifest = Manifest.load(Path(store_path))
    except StoreError:
        return {"docs": "not loaded"}
    if manifest.model_fingerprint != engine.fingerprint:
        return {"docs": "not indexed for this model"}
    return {"docs": "not loaded"}


class StatusBar(Static):
    """One line of figures. When the line is too narrow it abbreviates, then drops the fields that
    matter least (store, model, method), so the reply's figures always show."""

    SHORT = {"tok/s": "t/s", "accepted": "acc", "method": "", "model": "", "store": "docs"}
    DROP_ORDER = ("store", "model", "method", "docs", "accepted")

    def show(self, **fields) -> None:
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._render_fields()

    def on_resize(self) -> None:
        if getattr(self, "_fields", None):
            self._render_fields()

    def _render_fields(self) -> None:
        fields = dict(self._fields)
        width = max(self.size.width - 2, 20) if self.size.width else 10**6
        line = " · ".join(f"{k} {v}" for k, v in fields.items())
        if len(line) > width:  # abbreviate the names, and the model to its stem
            if "model" in fields:
                fields["model"] = str(fields["model"]).removesuffix(".gguf")[:24]
            line = " · ".join(f"{self.SHORT.get(k, k)} {v}".strip() for k, v in fields.items())
            for key in self.DROP_ORDER:
                if len(line) <= width:
                    break
                fields.pop(key, None)
                line = " · ".join(f"{self.SHORT.get(k, k)} {v}".strip() for k, v in fields.items())
        self.update(line)
