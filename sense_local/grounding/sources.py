"""Sources: what an answer was grounded on, for citations in the CLI and the TUI."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..datastore.passages import PassageRow

SNIPPET_CHARS = 240
# A word split over a line end by typesetting (man pages: "tradi\u2010\n       tional"): joined in
# snippets. An ASCII hyphen at a line end is left alone: "well-\nknown" is a hyphenated word.
HYPHEN_BREAK = re.compile(r"(\w)[\u2010\u00ad]\n\s*(?=[a-z])")


@dataclass
class Source:
    number: int  # [n] as cited in the prompt
    path: str
    line: int  # 1-based first line of the passage in the document's text
    page: int  # 1-based PDF page, 0 when the document has no pages
    snippet: str  # the start of the passage text, whitespace collapsed
    score: float
    passage: str  # the full passage text placed in the prompt

    @classmethod
    def from_row(cls, number: int, row: PassageRow, score: float) -> "Source":
        flat = " ".join(HYPHEN_BREAK.sub(r"\1", row.text).split())
        snippet = flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
        return cls(number, row.path, row.line, row.page, snippet, score, row.text)

    @property
    def location(self) -> str:
        return f"page {self.page}" if self.page else f"line {self.line}"

    def label(self) -> str:
        return f"[{self.number}] {self.path}, {self.location}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("passage")
        d["score"] = round(self.score, 4)
        return d
