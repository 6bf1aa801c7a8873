"""The relevance gate's meaning test (grounding/gate.py): a store's background, its floor, its cache,
and the gate on questions made of words a manual uses ("Name three colours." over ls, grep, chmod)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from man_pages import MAN_PAGES
from sense_local.datastore import DocumentStore, index_paths
from sense_local.grounding import gate
from sense_local.grounding.gate import BACKGROUND, BACKGROUND_FILE, Background, background_for
from sense_local.grounding.retrieve import PassageRetriever


def _store(tmp_path, n_vectors=1000):
    return SimpleNamespace(dir=tmp_path, n_vectors=n_vectors, gate_background=None)


def test_the_floor_is_relative_to_the_background_and_absent_where_keys_do_not_separate():
    low = Background(8, 1000, [1e-6] * 12 + [4e-6] * 12)
    assert low.floor == pytest.approx(gate.VOTE_RATIO * low.median)
    # key states that put generic messages at cosine ~0.9 to the documents (the 135M's): words decide
    close = Background(9, 1000, [math.exp((0.9 - 1) / gate.VOTE_TEMPERATURE)] * 24)
    assert close.floor is None
    assert Background(8, 1000, []).floor is None


def test_the_background_is_measured_once_kept_beside_the_store_and_measured_again_when_it_changes(tmp_path):
    calls = []

    def votes_of(message):
        calls.append(message)
        return 1e-5 * (1 + len(calls) % 3)

    store = _store(tmp_path)
    first = background_for(store, 8, votes_of)
    assert calls == list(BACKGROUND) and store.gate_background is first
    saved = json.loads((tmp_path / BACKGROUND_FILE).read_text())
    assert saved["votes"] == first.votes and saved["n_vectors"] == 1000
    # another process (a fresh store object) reads the file instead of measuring
    assert background_for(_store(tmp_path, 1500), 8, votes_of).votes == first.votes
    assert len(calls) == len(BACKGROUND)
    # twice the vectors, or another key layer: measured again
    background_for(_store(tmp_path, 2500), 8, votes_of)
    assert len(calls) == 2 * len(BACKGROUND)
    background_for(_store(tmp_path, 2500), 9, votes_of)
    assert len(calls) == 3 * len(BACKGROUND)


def test_a_damaged_or_unwritable_background_file_is_measured_again_not_an_error(tmp_path):
    (tmp_path / BACKGROUND_FILE).write_text("{not json")
    got = background_for(_store(tmp_path), 8, lambda m: 2e-6)
    assert got.votes == [2e-6] * len(BACKGROUND)
    assert json.loads((tmp_path / BACKGROUND_FILE).read_text())["votes"] == got.votes  # repaired
    missing = _store(tmp_path / "gone")  # a directory that cannot be written: kept in memory only
    assert background_for(missing, 8, lambda m: 3e-6).votes == [3e-6] * len(BACKGROUND)
    assert missing.gate_background is not None and not (tmp_path / "gone").exists()


@pytest.fixture(scope="module")
def man_store_default(default_engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("man-default")
    (root / "docs").mkdir()
    for name, text in MAN_PAGES.items():
        (root / "docs" / name).write_text(text)
    index_paths(default_engine, root / "store", [root / "docs"])
    return DocumentStore.open(root / "store", fingerprint=default_engine.fingerprint)


def test_the_indexer_measures_the_background_before_any_question(man_store_default):
    saved = Background(**json.loads((man_store_default.dir / BACKGROUND_FILE).read_text()))
    assert saved.fits(man_store_default.manifest.key_layer, man_store_default.n_vectors)
    assert saved.floor is not None  # the 1.5B's keys separate topics


@pytest.mark.parametrize("question", ["Name three colours.", "Name three colors.", "Can you help me?", "0",
                                      "What is 2+2?"])
def test_questions_made_of_a_manuals_words_get_no_passages_on_the_default_model(default_engine, man_store_default,
                                                                                  question):
    retriever = PassageRetriever(default_engine, man_store_default)
    assert retriever.search(question, 3) == []
    assert retriever.search(question, 3, gate=False)  # the passages were there: the gate held them back


@pytest.mark.parametrize("question, page", [
    ("How do I make grep show colours?", "grep.txt"),
    ("How do I list files sorted by size?", "ls.txt"),
    ("What does chmod +x do?", "chmod.txt"),
    ("How do I search for a word ignoring case?", "grep.txt"),
    ("How do I give the group write permission?", "chmod.txt"),
])
def test_questions_about_the_manuals_get_their_page_on_the_default_model(default_engine, man_store_default,
                                                                          question, page):
    hits = PassageRetriever(default_engine, man_store_default).search(question, 3)
    assert hits and Path(hits[0].passage.path).name == page


def test_where_the_keys_do_not_separate_topics_words_decide(engine, tmp_path):
    """The 135M's block keys put generic messages near everything: no floor, the coverage rule alone."""
    (tmp_path / "docs").mkdir()
    for name, text in MAN_PAGES.items():
        (tmp_path / "docs" / name).write_text(text)
    index_paths(engine, tmp_path / "store", [tmp_path / "docs"])
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    retriever = PassageRetriever(engine, store)
    hits, evidence = retriever.search_with_evidence("How do I make grep show colours?")
    assert evidence.floor is None and evidence.relevant
    assert Path(hits[0].passage.path).name == "grep.txt"
    assert retriever.search("What is the capital of France?", 3) == []  # its words are not there
