"""The indexer's phases on a fake engine (no model, a second): what changed, words first, then the
model pass with its PassState reports and commits, owed documents, a cancelled pass. The real model's
indexing is tested in test_datastore.py and test_resumed_index.py."""
from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from sense_local.datastore import DocumentStore, document_state, index_paths


class FakePass:
    def __init__(self, n_embd: int):
        self.n_embd = n_embd

    def run(self, tokens) -> np.ndarray:
        t = np.asarray(tokens, np.float32)
        return np.stack([np.sin(t * (k + 1) + np.arange(len(t))) for k in range(self.n_embd)], 1).astype(np.float32)


class FakeEngine:
    """What the indexer asks of an engine: bytes as tokens, and key states made from them."""

    n_embd = 8

    def __init__(self):
        self.info = SimpleNamespace(fingerprint="e" * 32, name="fake")
        self.fingerprint = self.info.fingerprint
        self.key_layer = None
        self.resets = 0

    def use_key_layer(self, layer):
        self.key_layer = layer

    def tokenize(self, text, add_special=True, parse_special=False):
        return ([1] if add_special else []) + [b + 2 for b in text.encode("utf-8")]

    def piece(self, token):
        return bytes([token - 2]) if token >= 2 else b""

    def hidden_pass(self, window):
        return FakePass(self.n_embd)

    def reset(self):
        self.resets += 1


@pytest.fixture
def warmed(monkeypatch):
    from sense_local.grounding.retrieve import PassageRetriever

    calls = []
    monkeypatch.setattr(PassageRetriever, "warm_gate", lambda self: calls.append(self.store.n_vectors))
    return calls


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / f"d{i}.txt").write_text(f"Paragraph {i} about things.\n\n" * (20 + 30 * i))
    (folder / "sub" / "s.md").write_text("# Title\n\nSome *markdown* here.\n" * 10)
    (folder / "empty.txt").write_text("")
    (folder / "big.txt").write_text("x" * 30_000)
    return folder


def test_words_first_then_each_document_read_and_committed(tmp_path, docs, warmed):
    engine, events = FakeEngine(), []
    report = index_paths(engine, tmp_path / "store", [docs], commit_every=0.0, max_file_bytes=20_000,
                         on_searchable=lambda n: events.append(("searchable", n)),
                         progress=lambda done, total, path: events.append(("progress", done, total)),
                         on_pass=lambda state: events.append(("pass", state)))
    names = sorted(os.path.basename(p) for p in report.added)
    assert names == ["d0.txt", "d1.txt", "d2.txt", "s.md"] and not report.updated and not report.removed
    assert {os.path.basename(p): why for p, why in report.skipped.items()} == {
        "big.txt": "too large (0 MB > 0 MB limit)", "empty.txt": "empty file"}
    assert events[0] == ("searchable", 4)  # the words are committed before the model reads anything
    progress = [e[1:] for e in events if e[0] == "progress"]
    total = progress[0][1]
    assert progress[0] == (0, total) and progress[-1] == (total, total) == (report.tokens, total)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    states = [e[1] for e in events if e[0] == "pass"]
    assert len(states[0].queued) == 4 and not states[0].read and not states[0].saved
    assert not states[-1].queued and not states[-1].read and len(states[-1].saved) == 4
    reading = [s for s in states if s.reading]
    assert {document_state(s.reading, False, s) for s in reading} >= {"reading now (0%)", "reading now (100%)"}
    assert [len(s.queued) for s in states] == sorted((len(s.queued) for s in states), reverse=True)
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    assert not store.unkeyed() and store.n_vectors == report.store_vectors == report.tokens - 4
    assert warmed == [store.n_vectors] and engine.resets == 1 and report.unkeyed == 0


def test_changed_touched_deleted_and_new_files(tmp_path, docs, warmed):
    engine = FakeEngine()
    index_paths(engine, tmp_path / "store", [docs], max_file_bytes=20_000)
    (docs / "d1.txt").write_text("changed text " * 30)
    later = time.time() + 5
    os.utime(docs / "d2.txt", (later, later))  # touched, not changed
    (docs / "d0.txt").unlink()
    (docs / "new.txt").write_text("a new document " * 20)
    report = index_paths(engine, tmp_path / "store", [docs], max_file_bytes=20_000)
    base = lambda paths: sorted(os.path.basename(p) for p in paths)  # noqa: E731
    assert (base(report.added), base(report.updated), base(report.removed)) == (["new.txt"], ["d1.txt"], ["d0.txt"])
    assert report.unchanged == 2  # d2.txt (same bytes, new mtime) and s.md
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    assert base(store.manifest.documents) == ["d1.txt", "d2.txt", "new.txt", "s.md"] and not store.unkeyed()
    assert store.manifest.documents[str(docs / "d2.txt")].mtime == later


def test_a_cancelled_pass_leaves_words_and_the_next_run_owes_or_reads_them(tmp_path, docs, warmed):
    engine, store_dir = FakeEngine(), tmp_path / "store"
    cancel = threading.Event()
    report = index_paths(engine, store_dir, [docs], max_file_bytes=20_000, on_searchable=lambda n: cancel.set(),
                         cancel=cancel)
    assert len(report.added) == 4 and report.tokens == 0 and report.unkeyed == 4 and warmed == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.txt").write_text("other words " * 10)
    owed = []
    report = index_paths(engine, store_dir, [other], finish_keys=False, on_owed=lambda *a: owed.append(a))
    owed_tokens = report.owed_tokens
    assert (report.owed, report.unkeyed) == (4, 4) and owed_tokens > 0 and owed == [(4, owed_tokens, False)]
    report = index_paths(engine, store_dir, [other], on_owed=lambda *a: owed.append(a))
    assert report.unchanged == 1 and report.tokens == owed_tokens and report.unkeyed == 0 and report.owed == 0
    assert owed[-1] == (4, owed_tokens, True)
