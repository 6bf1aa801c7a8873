"""Grounded chat on the real model and real stores: passages, retrieval, prompt budget, `ask`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import pydoc_topics_store, run_cli
from benchmarks.doc_questions import QUESTIONS
from benchmarks.retrieval_bench import measure_recall
from sense_local.datastore import DocumentStore, index_paths
from sense_local.datastore.passages import MAX_LEN, fts_query, split_passages
from sense_local.errors import ContextOverflowError, SenseError
from sense_local.grounding.chat import GroundedChat
from sense_local.grounding.retrieve import PassageRetriever

# Topics of the store under test, and the questions of the set that they answer.
TOPICS = ["assert", "del", "global", "lambda", "pass", "raise", "while", "with", "yield", "import", "truth", "dict"]
SUBSET = [q for q in QUESTIONS if q.topic in TOPICS]


@pytest.fixture(scope="module")
def store_dir(engine, tmp_path_factory) -> Path:
    return pydoc_topics_store(engine, tmp_path_factory, "grounding", TOPICS)


@pytest.fixture(scope="module")
def store(engine, store_dir):
    return DocumentStore.open(store_dir, fingerprint=engine.fingerprint)


def test_passages_tile_the_document_and_know_their_line(engine):
    from pydoc_data.topics import topics

    text = topics["with"]
    tokens = np.asarray(engine.tokenize(text, add_special=True), np.int32)
    spans = split_passages(tokens, engine.piece)
    assert len(spans) > 5
    assert all(b.start >= a.end for a, b in zip(spans, spans[1:]))  # in order, no overlap
    assert all(s.end - s.start <= MAX_LEN for s in spans)
    covered = sum(s.end - s.start for s in spans)
    assert covered >= 0.95 * len(tokens)  # only whitespace-only stretches are left out
    lines = text.split("\n")
    for s in spans:
        first_line = s.text.split("\n")[0].strip()
        assert first_line in lines[s.line - 1], (s.line, first_line)


def test_fts_query_keeps_content_words_and_drops_syntax():
    q = fts_query('What does "with" do? AND (NEAR x) __exit__*')
    assert '"__exit__"' in q and '"near"' in q and '"what"' not in q
    assert "(" not in q.replace('"', "") and "*" not in q
    assert fts_query("   ?? !! ") == ""
    assert fts_query("What does the with statement do?") == '"with" OR "statement"'  # keywords are topics


def test_a_keyword_question_finds_its_topic(engine, store):
    hits = PassageRetriever(engine, store).search("What does the with statement do?", 3)
    assert "with.txt" in [Path(h.passage.path).name for h in hits]


@pytest.mark.parametrize("ranker", ["fused", "bm25", "hidden"])
def test_a_paragraph_two_files_hold_is_retrieved_once(engine, tmp_path, ranker):
    """Two copies of one note (a file copied into another folder) are one passage's text: the k
    passages given are k different texts, the next one filling the place of the copy."""
    docs = tmp_path / "docs"
    (docs / "copy").mkdir(parents=True)
    note = ("The kiln in the back room is fired on Tuesdays only. Glazed pieces wait on the left "
            "shelf, bisque on the right; nobody opens the kiln above 200 degrees.\n")
    (docs / "kiln.txt").write_text(note)
    (docs / "copy" / "kiln.txt").write_text(note)
    (docs / "log.txt").write_text("Kiln log: the March firing reached 1,240 degrees and cracked two bowls.\n")
    (docs / "rules.txt").write_text("Studio rules: sweep the floor by the kiln and wash brushes before you leave.\n")
    index_paths(engine, tmp_path / "store", [docs])
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    retriever = PassageRetriever(engine, store, ranker)
    question = "On which day is the kiln fired?"
    hits = retriever.search(question, 3, gate=False)
    texts = [" ".join(h.passage.text.split()) for h in hits]
    assert len(hits) == 3 and len(set(texts)) == 3, texts
    assert texts.count(" ".join(note.split())) == 1
    by_rank = retriever.by_keys(question, 20) if ranker == "hidden" else retriever.bm25(question, 20)
    assert sum(" ".join(h.passage.text.split()) == " ".join(note.split()) for h in by_rank) == 2  # both copies ranked


def test_every_question_is_labelled_with_a_real_topic_and_answer():
    from pydoc_data.topics import topics

    assert len(QUESTIONS) >= 40
    for q in QUESTIONS:
        assert q.topic in topics
        assert q.answer is None or q.answer in topics[q.topic]


def test_fused_retrieval_finds_the_right_topic(engine, store):
    results = measure_recall(engine, store, rankers=("fused",), questions=SUBSET)
    assert len(SUBSET) >= 10
    assert results["fused"]["recall@3"] >= 0.8, results["fused"]["misses"]


def test_hidden_state_ranker_beats_chance(engine, store):
    results = measure_recall(engine, store, rankers=("hidden",), questions=SUBSET)
    assert results["hidden"]["recall@3"] > 3 / len(TOPICS)


def test_ask_answers_with_sources_in_the_right_document(store_dir):
    r = run_cli("ask", "What methods does a context manager of the with statement need?",
                "--store", str(store_dir), "--max-tokens", "48", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["answer"].strip()
    assert doc["sources"], doc
    top = doc["sources"][0]
    assert Path(top["path"]).name == "with.txt"
    text = Path(top["path"]).read_text().split("\n")
    assert top["line"] >= 1 and top["snippet"].split()[0] in " ".join(text[top["line"] - 1 :])


def test_ask_prints_sources_for_people(store_dir):
    r = run_cli("ask", "What does the pass statement do?", "--store", str(store_dir), "--max-tokens", "24")
    assert r.returncode == 0, r.stderr
    assert "Sources:" in r.stdout and "pass.txt, line" in r.stdout


def test_ask_bad_input_gets_one_line_errors(store_dir, tmp_path):
    for args in (["   "], ["x", "--store", str(tmp_path / "missing")], ["x", "--store", str(store_dir), "--passages", "0"]):
        r = run_cli("ask", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_questions_the_documents_are_not_about_get_no_passages(engine, store):
    """The relevance gate: few of these questions' words occur in the documents (the Python reference),
    so no passage goes into the prompt and none is cited, and the user is told why. A question in
    another language than the documents' is gated too, unless grounding is forced (--always-ground)."""
    for question in ("How do I bake sourdough bread?", "Who painted the Mona Lisa?",
                     "¿Qué hace la instrucción pass en Python?"):
        turn = GroundedChat(engine, store).prepare([], question, reserve=64)
        assert not turn.sources and turn.content == question, question
        assert any("not about this question" in n for n in turn.notes), turn.notes
    related = GroundedChat(engine, store).prepare([], "What does the pass statement do?", reserve=64)
    assert related.sources and "pass.txt" in related.sources[0].path
    forced = GroundedChat(engine, store, gate=False).prepare([], "¿Qué hace la instrucción pass en Python?", reserve=64)
    assert forced.sources and "Question: ¿Qué hace" in forced.content


def test_coverage_is_the_share_of_question_words_the_documents_use(store):
    passages = store.passages
    assert passages.coverage("What do global statements declare?") == 1.0  # stemmed: "statements" too
    assert passages.coverage("How do I bake sourdough bread?") == 0.0
    assert passages.coverage("the of and ?!") == 0.0  # no content words
    assert passages.coverage("0") == 0.0 and passages.coverage("What is 2+2?") == 0.0  # numbers alone
    assert passages.coverage("What does PEP 8 say about lambda?") == passages.coverage("What does PEP say about lambda?")
    mixed = passages.coverage("lambda sourdough")
    assert 0.0 < mixed < 1.0


def test_a_small_library_still_grounds_questions_in_everyday_words(engine, tmp_path):
    """Two short notes: a question names four of their words and uses two everyday ones they lack
    ("day", "week"). With absent words at their own idf (df 0) it fell under the floor; they weigh as
    the rarest present word instead, so it is grounded, and small talk still is not."""
    from sense_local.grounding.retrieve import COVERAGE_FLOOR

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text("# The Brass Kettle Inn\n\nThe Brass Kettle Inn was opened in 1871. "
                                    "The inn closes every Tuesday so the cellar can be cleaned.\n")
    (docs / "garden.md").write_text("# Allotments\n\nThe allotments grow leeks, runner beans and rhubarb.\n")
    index_paths(engine, tmp_path / "store", [docs])
    passages = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint).passages
    assert passages.coverage("Which day of the week is the Brass Kettle Inn closed?") >= COVERAGE_FLOOR
    assert passages.coverage("Name three colors.") == 0.0


def test_empty_store_answers_without_documents(engine, tmp_path):
    empty = tmp_path / "empty-docs"
    empty.mkdir()
    index_paths(engine, tmp_path / "store", [empty])
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    turn = GroundedChat(engine, store).prepare([], "What does pass do?", reserve=64)
    assert not turn.sources and any("empty" in n for n in turn.notes)
    assert turn.content == "What does pass do?"


def test_empty_question_is_refused(engine, store):
    with pytest.raises(SenseError, match="empty question"):
        GroundedChat(engine, store).prepare([], "  \n", reserve=64)


def test_passage_budget_and_context_overflow(engine, store):
    small = GroundedChat(engine, store, passages=3, budget=80).prepare([], "What does the with statement do?", reserve=64)
    big = GroundedChat(engine, store, passages=3, budget=2048).prepare([], "What does the with statement do?", reserve=64)
    assert len(small.tokens) < len(big.tokens)
    assert len(small.tokens) <= len(engine.tokenize(small.content, add_special=False)) + 32
    # a long conversation: older turns are dropped, the grounded question stays
    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"Tell me fact {i}. " + "word " * 60},
                    {"role": "assistant", "content": "Here is a fact. " + "text " * 60}]
    turn = GroundedChat(engine, store).prepare(history, "What does the with statement do?", reserve=256)
    assert turn.dropped > 0 and len(turn.tokens) + 256 <= engine.n_ctx
    assert turn.sources and "Question: What does the with statement do?" in engine.detokenize(turn.tokens)
    with pytest.raises(ContextOverflowError):
        GroundedChat(engine, store).prepare([], "word " * 5000, reserve=64)


def test_partial_index_is_said(engine, store_dir):
    store = DocumentStore.open(store_dir, fingerprint=engine.fingerprint)
    marker = store_dir / "indexing.json"
    marker.write_text(json.dumps({"pid": os.getpid(), "started": 0}))
    try:
        turn = GroundedChat(engine, store).prepare([], "What does pass do?", reserve=64)
    finally:
        marker.unlink()
    assert any("indexed so far" in n for n in turn.notes)
    assert not any("indexed so far" in n for n in GroundedChat(engine, store).prepare([], "What does pass do?", reserve=64).notes)


def test_uncommitted_passages_never_show_and_are_pruned(engine, store_dir, tmp_path):
    import shutil

    from sense_local.datastore.manifest import DocEntry

    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    writer = DocumentStore.open(copy, fingerprint=engine.fingerprint, writable=True)
    tokens = np.asarray(engine.tokenize("zanzibar quokka passage about nothing at all", add_special=True), np.int32)
    keys = np.zeros((len(tokens) - 1, engine.n_embd), np.float32) + 0.1
    writer.add_document(DocEntry("/nowhere/zanzibar.txt", "0" * 64, 0.0, 1, 0, 0), tokens, keys,
                        split_passages(tokens, engine.piece))
    writer.passages.commit()  # the passage rows land, the manifest does not (a crash right here)
    reader = DocumentStore.open(copy, fingerprint=engine.fingerprint)
    assert not PassageRetriever(engine, reader, "bm25").search("zanzibar quokka", 3, gate=False)
    writer.release()  # a crashed writer's lock goes with its process
    reopened = DocumentStore.open(copy, fingerprint=engine.fingerprint, writable=True)  # prunes leftovers
    assert "/nowhere/zanzibar.txt" not in {p for p, *_ in reopened.passages.db.execute("SELECT path FROM passages")}


def test_index_refresh_is_seen_by_an_open_chat(engine, store_dir, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    reader = DocumentStore.open(copy, fingerprint=engine.fingerprint)
    chat = GroundedChat(engine, reader, ranker="bm25")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "walrus.txt").write_text("The walrus operator := assigns a value inside an expression.\n")
    index_paths(engine, copy, [extra])
    turn = chat.prepare([], "What does the walrus operator do?", reserve=64)
    assert turn.sources and Path(turn.sources[0].path).name == "walrus.txt"


def test_pdf_passages_cite_their_page(engine, tmp_path):
    from test_datastore import _minimal_pdf

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.pdf").write_bytes(_minimal_pdf([
        "The boiler must be serviced every spring by a licensed engineer.",
        "The garden hose is stored in the shed behind the garage for winter.",
    ]))
    index_paths(engine, tmp_path / "store", [docs])
    store = DocumentStore.open(tmp_path / "store", fingerprint=engine.fingerprint)
    hits = PassageRetriever(engine, store, "bm25").search("Where is the garden hose stored?", 3)
    assert hits
    rows = {h.passage.page for h in hits if "hose" in h.passage.text}
    assert rows == {2}, [(h.passage.page, h.passage.text[:40]) for h in hits]


def test_a_store_without_passages_gets_them_on_the_next_index_run(engine, store_dir, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    writer = DocumentStore.open(copy, fingerprint=engine.fingerprint, writable=True)
    writer.passages.db.execute("DELETE FROM passages")  # as built before passages existed
    writer.passages.commit()
    assert writer.passages.count(writer.live_documents()) == 0
    assert writer.fill_missing_passages(engine.piece) == len(TOPICS)
    assert writer.fill_missing_passages(engine.piece) == 0  # idempotent
    hits = PassageRetriever(engine, writer, "bm25").search("What does the pass statement do?", 3)
    assert hits and Path(hits[0].passage.path).name == "pass.txt"


def test_a_new_document_is_found_by_words_before_its_keys(engine, store_dir, tmp_path):
    """Indexing commits words first: `ask` cites a just-added document while its key pass has not run
    (here: is cancelled), and the next run adds its keys."""
    import shutil
    import threading

    copy = tmp_path / "store"
    shutil.copytree(store_dir, copy)
    vectors_before = DocumentStore.open(copy).n_vectors
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "walrus.txt").write_text("The walrus operator := assigns a value to a name inside an expression.\n")
    stop_keys = threading.Event()
    report = index_paths(engine, copy, [extra], on_searchable=lambda n: stop_keys.set(), cancel=stop_keys)
    assert report.added == [str((extra / "walrus.txt").resolve())] and report.unkeyed == 1 and report.tokens == 0
    store = DocumentStore.open(copy)
    assert [d.path for d in store.unkeyed()] == report.added and store.n_vectors == vectors_before

    r = run_cli("ask", "What does the walrus operator do?", "--store", str(copy), "--max-tokens", "8", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["sources"] and Path(doc["sources"][0]["path"]).name == "walrus.txt", doc
    assert any("by words only" in n for n in doc.get("notes", [])), doc

    report = index_paths(engine, copy, [extra])  # unchanged file, keys still owed: the pass runs now
    assert report.unchanged == 1 and report.unkeyed == 0 and report.tokens > 0
    store = DocumentStore.open(copy)
    assert not store.unkeyed() and store.n_vectors == vectors_before + report.tokens - 1
