"""Passages: the units grounded chat retrieves, cites and puts into the prompt.

A document's token stream is cut into passages of about `TARGET` tokens, preferably where a piece
holds a blank line (a paragraph end), never longer than `MAX_LEN`. Each passage knows its token span,
its first line in the document's text and its text, so a citation can say "file.txt, line 120".

Passages live in `passages.sqlite` beside the index, in an FTS5 table (SQLite's full-text index,
ranked by BM25). Rows carry the global start position of their document, which is never reused
(the token stream is append-only): a row counts only while the committed manifest has a document
with that path and start, so the table can run ahead of the manifest after a crash without ever
disagreeing with it; leftovers are deleted when the store is next opened for writing.
"""
from __future__ import annotations

import re
import hashlib
import math
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PASSAGES_DB = "passages.sqlite"
TARGET = 96  # tokens: a paragraph or two; three of them fit a small model's prompt with room to spare
MAX_LEN = 160
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\W\d_]+", re.UNICODE)
# Question words and glue that never carry a topic. Words like "with", "for", "in", "if", "as",
# "from" stay: in technical documents they are the topic ("What does the with statement do?").
STOPWORDS = frozenset(
    "a an and are at be been by can did do does how i into is it its me my of on or please tell that the "
    "then there these this those to was what when where which who why will would you your".split()
)


@dataclass
class PassageSpan:
    start: int  # token offset inside the document
    end: int
    line: int  # 1-based line of the document's text where the passage starts
    text: str


def split_passages(tokens: np.ndarray, piece_of: Callable[[int], bytes], breaks: Sequence[int] = (),
                   target: int = TARGET, max_len: int = MAX_LEN) -> list[PassageSpan]:
    """Cut one document's tokens [T] into passages (see the module docstring). `breaks`: token
    offsets where a passage must start (PDF pages), so every passage lies on one page."""
    pieces = [piece_of(int(t)) for t in tokens]
    forced = {b - 1 for b in breaks if 0 < b <= len(pieces)}
    spans: list[PassageSpan] = []
    start, line = 0, 1
    for i, piece in enumerate(pieces):
        length = i + 1 - start
        paragraph_end = b"\n\n" in piece or (piece.endswith(b"\n") and i + 1 < len(pieces) and pieces[i + 1].startswith(b"\n"))
        if (length >= target // 2 and paragraph_end) or length >= max_len or i + 1 == len(pieces) or i in forced:
            raw = b"".join(pieces[start : i + 1])
            decoded = raw.decode("utf-8", errors="replace")
            text = decoded.strip()
            if text:
                leading = decoded[: len(decoded) - len(decoded.lstrip())]
                spans.append(PassageSpan(start, i + 1, line + leading.count("\n"), text))
            line += raw.count(b"\n")
            start = i + 1
    return spans


def content_terms(text: str) -> list[str]:
    """A question's content words, lower-cased, each once, in order (no stopwords, no lone letters)."""
    words = [w.lower() for w in WORD.findall(text)]
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS and (len(w) > 1 or w.isdigit())))


def fts_query(text: str) -> str:
    """A user's question as an FTS5 query: its content words, OR-ed and quoted (no FTS syntax leaks)."""
    return " OR ".join(f'"{w}"' for w in content_terms(text))


@dataclass
class PassageRow:
    rowid: int
    path: str
    doc_start: int  # global position of the document's first token (identifies its version)
    start: int  # global token positions of the passage
    end: int
    line: int
    page: int  # 1-based PDF page, 0 when the document has no pages
    text: str


COLUMNS = "rowid, path, doc_start, start, end, line, page, text"  # selected in PassageRow's order


def _row(values) -> PassageRow:
    rowid, path, doc_start, start, end, line, page, text = values
    return PassageRow(int(rowid), path, int(doc_start), int(start), int(end), int(line), int(page), text)


def _live(live: dict[str, int], path: str, doc_start) -> bool:
    """Whether a row belongs to a committed document (path -> global start of its current version)."""
    return live.get(path) == int(doc_start)


def passages_digest(texts: Iterable[str]) -> str:
    """sha256 over a document's passage texts in order (the manifest keeps it: integrity.py)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", errors="surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


class PassageTable:
    """The FTS5 table of passages (see the module docstring)."""

    def __init__(self, directory: Path):
        self.db = sqlite3.connect(Path(directory) / PASSAGES_DB, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")  # readers (chat) never wait for the indexer
        self.db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS passages USING fts5("
            "text, path UNINDEXED, doc_start UNINDEXED, start UNINDEXED, end UNINDEXED, "
            "line UNINDEXED, page UNINDEXED, tokenize = 'porter unicode61')"
        )
        self.db.commit()

    def add(self, path: str, doc_start: int, spans: Iterable[PassageSpan], page_starts: list[int]) -> None:
        """Insert a document's passages (uncommitted until `commit`). page_starts: global positions."""
        pages = np.asarray(page_starts, np.int64)
        rows = []
        for s in spans:
            g = doc_start + s.start
            page = int(np.searchsorted(pages, g, side="right")) if len(pages) else 0
            rows.append((s.text, path, doc_start, g, doc_start + s.end, s.line, page))
        self.db.executemany(
            "INSERT INTO passages (text, path, doc_start, start, end, line, page) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
        )

    def commit(self) -> None:
        self.db.commit()

    def checkpoint(self) -> None:
        """Move the write-ahead log into the database file (a writer's last act: the file on disk is then
        the whole table, which is what integrity checks read)."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def digests(self) -> dict[tuple[str, int], str]:
        """(path, doc_start) -> passages_digest of its rows, for every document the table holds."""
        texts: dict[tuple[str, int], list[str]] = {}
        for text, path, doc_start in self.db.execute("SELECT text, path, doc_start FROM passages ORDER BY doc_start, start"):
            texts.setdefault((path, int(doc_start)), []).append(text)
        return {key: passages_digest(t) for key, t in texts.items()}

    def fts_integrity(self) -> None:
        """FTS5's own check that its inverted index matches its rows (raises sqlite3.DatabaseError)."""
        self.db.execute("INSERT INTO passages(passages) VALUES('integrity-check')")

    def prune(self, live: dict[str, int]) -> None:
        """Delete rows of documents that are not live in the committed manifest."""
        self.db.rollback()
        stale = [(rowid,) for rowid, path, ds in self.db.execute("SELECT rowid, path, doc_start FROM passages")
                 if not _live(live, path, ds)]
        self.db.executemany("DELETE FROM passages WHERE rowid = ?", stale)
        self.db.commit()

    def doc_starts(self) -> set[int]:
        """Document starts that have passage rows (live or not)."""
        return {int(r[0]) for r in self.db.execute("SELECT DISTINCT doc_start FROM passages")}

    def count(self, live: dict[str, int]) -> int:
        return sum(_live(live, path, ds) for path, ds in self.db.execute("SELECT path, doc_start FROM passages"))

    def search(self, question: str, k: int, live: dict[str, int]) -> list[tuple[PassageRow, float]]:
        """BM25 top-k live passages for a question: (row, score), best first (higher is better)."""
        query = fts_query(question)
        if not query:
            return []
        cursor = self.db.execute(
            f"SELECT {COLUMNS}, bm25(passages) FROM passages WHERE passages MATCH ? ORDER BY bm25(passages) LIMIT ?",
            (query, 4 * k + 16),
        )
        found = [(_row(values[:-1]), -values[-1]) for values in cursor if _live(live, values[1], values[2])]
        return found[:k]

    def coverage(self, question: str) -> float:
        """How much of a question the documents' vocabulary holds: the idf-weighted share of its content
        words that occur in some passage (after the table's stemming). A word no passage holds weighs
        as much as the rarest word they do hold (idf at df 1): at its own df of 0 it would outweigh
        every name a question shares with a small library (two notes: "Which day of the week is the
        Brass Kettle Inn closed?" has "day" and "week" absent, four names present). 0 for a question
        with no content words. Words like "sourdough" or "Everest" that the documents never use say
        the question is about something else. Numbers do not count: a message of digits alone ("0",
        "What is 2+2?") has nothing to be about, and every manual holds "0" (EXIT STATUS)."""
        terms = [t for t in content_terms(question) if not t.isdigit()]
        if not terms:
            return 0.0
        n = max(self.db.execute("SELECT count(*) FROM passages").fetchone()[0], 1)
        found = total = 0.0
        for term in terms:
            df = self.db.execute("SELECT count(*) FROM passages WHERE passages MATCH ?", (f'"{term}"',)).fetchone()[0]
            weight = math.log((n - max(df, 1) + 0.5) / (max(df, 1) + 0.5) + 1.0)  # BM25's idf
            total += weight
            found += weight if df else 0.0
        return found / total if total > 0 else 0.0

    def span_arrays(self, live: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, ends, rowids) of every live passage, sorted by start: maps token positions to passages."""
        rows = sorted(
            (int(start), int(end), rowid)
            for rowid, path, doc_start, start, end in self.db.execute("SELECT rowid, path, doc_start, start, end FROM passages")
            if _live(live, path, doc_start)
        )
        arr = np.array(rows, np.int64).reshape(-1, 3)
        return arr[:, 0], arr[:, 1], arr[:, 2]

    def rows(self, rowids: Iterable[int]) -> dict[int, PassageRow]:
        found = (self.db.execute(f"SELECT {COLUMNS} FROM passages WHERE rowid = ?", (int(r),)).fetchone() for r in rowids)
        return {row.rowid: row for row in map(_row, filter(None, found))}
