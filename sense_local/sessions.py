"""Chat sessions persisted in SQLite under the user data dir.

Each user message is written when sent and each reply when it ends, in WAL mode, so a crash or
kill loses at most the reply in progress.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .paths import data_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    settings TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL, content TEXT NOT NULL, spans TEXT NOT NULL DEFAULT '[]',
    stats TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);
"""


@dataclass
class Message:
    role: str
    content: str
    spans: list = field(default_factory=list)  # [[text, source, soft], ...] for highlighted replies
    stats: dict = field(default_factory=dict)


@dataclass
class Session:
    id: int
    title: str
    model: str
    method: str
    settings: dict
    updated: float


class SessionStore:
    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else data_home() / "sessions.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def create(self, title: str, model: str, method: str, settings: dict) -> Session:
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO sessions (title, model, method, settings, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (title, model, method, json.dumps(settings), now, now),
        )
        return Session(cur.lastrowid, title, model, method, settings, now)

    def list(self) -> list[Session]:
        rows = self.db.execute("SELECT id, title, model, method, settings, updated FROM sessions ORDER BY updated DESC")
        return [Session(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def get(self, session_id: int) -> Session | None:
        r = self.db.execute(
            "SELECT id, title, model, method, settings, updated FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return Session(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) if r else None

    def update(self, session: Session) -> None:
        session.updated = time.time()
        self.db.execute(
            "UPDATE sessions SET title = ?, model = ?, method = ?, settings = ?, updated = ? WHERE id = ?",
            (session.title, session.model, session.method, json.dumps(session.settings), session.updated, session.id),
        )

    def rename(self, session_id: int, title: str) -> None:
        self.db.execute("UPDATE sessions SET title = ? WHERE id = ?", (title, session_id))

    def delete(self, session_id: int) -> None:
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def add_message(self, session_id: int, message: Message) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO messages (session_id, role, content, spans, stats, created) VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, message.role, message.content, json.dumps(message.spans), json.dumps(message.stats), now),
        )
        self.db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def drop_last_message(self, session_id: int) -> None:
        """Remove the session's newest message (a question stopped before any reply)."""
        self.db.execute("DELETE FROM messages WHERE id = (SELECT MAX(id) FROM messages WHERE session_id = ?)",
                        (session_id,))

    def messages(self, session_id: int) -> list[Message]:
        rows = self.db.execute(
            "SELECT role, content, spans, stats FROM messages WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [Message(r[0], r[1], json.loads(r[2]), json.loads(r[3])) for r in rows]

    def close(self) -> None:
        self.db.close()
