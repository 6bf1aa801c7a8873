"""The document store on real documents and the real model: index, search, incremental updates,
crash safety, model mismatch and bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli
from sense_local.datastore import DocumentStore, StoreError, index_paths
from sense_local.datastore.indexer import document_keys

TOPICS = ["assert", "break", "pass", "del", "continue", "global"]


def _minimal_pdf(text_per_page: list[str]) -> bytes:
    """A small valid PDF with one text line per page (built by hand: no writer library needed)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in text_per_page:
        stream = f"BT /F1 12 Tf 72 712 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def _docx(paragraphs: list[str]) -> bytes:
    import io

    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("word/document.xml", f'<?xml version="1.0"?><w:document {ns}><w:body>{body}</w:body></w:document>')
    return buf.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from pydoc_data.topics import topics

    d = tmp_path_factory.mktemp("corpus")
    for t in TOPICS[:3]:
        (d / f"{t}.txt").write_text(topics[t])
    (d / "notes.md").write_text("# Notes\n\nThe *walrus* operator `:=` assigns inside expressions.\n")
    (d / "page.html").write_text("<html><head><style>p{}</style><script>var x=1;</script></head>"
                                 "<body><h1>Title</h1><p>Hypertext &amp; markup are parsed.</p></body></html>")
    (d / "paper.pdf").write_bytes(_minimal_pdf(["First page about lists.", "Second page about tuples."]))
    (d / "memo.docx").write_bytes(_docx(["Quarterly memo.", "Budget approved for the garden."]))
    sub = d / "sub"
    sub.mkdir()
    (sub / "code.py").write_text("def add(a, b):\n    return a + b\n")
    (d / ".hidden").mkdir()
    (d / ".hidden" / "secret.txt").write_text("never indexed")
    (d / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    # bad inputs: each skipped with a reason
    (d / "empty.txt").write_text("")
    (d / "blob.dat").write_bytes(b"\x00\x01\x02binary" * 100)
    (d / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \n%%EOF")
    with (d / "huge.txt").open("wb") as f:
        f.truncate(51 * 1024 * 1024)  # sparse: costs no disk
    return d


@pytest.fixture(scope="module")
def built(engine, corpus, tmp_path_factory):
    store_dir = tmp_path_factory.mktemp("stores") / "main"
    report = index_paths(engine, store_dir, [corpus])
    return store_dir, report


def test_index_reports_every_file(built, corpus):
    store_dir, report = built
    names = {Path(p).name for p in report.added}
    assert names == {"assert.txt", "break.txt", "pass.txt", "notes.md", "page.html", "paper.pdf", "memo.docx",
                     "code.py", "latin1.txt"}
    reasons = {Path(p).name: r for p, r in report.skipped.items()}
    assert reasons["empty.txt"] == "empty file"
    assert "binary" in reasons["blob.dat"]
    assert "broken PDF" in reasons["broken.pdf"]
    assert "too large" in reasons["huge.txt"]
    assert "secret.txt" not in names | set(reasons)
    assert report.tokens > 500 and report.store_vectors == report.tokens - len(report.added)


def test_formats_are_extracted_as_text(built):
    store_dir, _ = built
    store = DocumentStore.open(store_dir)
    docs = {Path(p).name: d for p, d in store.manifest.documents.items()}

    def text(name):
        d = docs[name]
        return store.tokens(d.start, d.end)

    assert len(docs["paper.pdf"].pages) == 2 and docs["paper.pdf"].pages[0] == docs["paper.pdf"].start
    assert docs["latin1.txt"].note == "decoded as cp1252"
    assert all(len(text(n)) > 2 for n in docs)


def test_extracted_text_content(corpus):
    from sense_local.datastore.extract import extract_text

    html = extract_text(corpus / "page.html").text
    assert "Hypertext & markup are parsed." in html and "var x" not in html and "p{}" not in html
    pdf = extract_text(corpus / "paper.pdf")
    assert "First page about lists." in pdf.text and "Second page" in pdf.text and len(pdf.pages) == 2
    assert extract_text(corpus / "memo.docx").text == "Quarterly memo.\nBudget approved for the garden."
    assert extract_text(corpus / "latin1.txt").text == "Café crème brûlée"


def test_search_finds_each_position_itself_with_its_continuation(built, engine):
    store_dir, _ = built
    store = DocumentStore.open(store_dir, fingerprint=engine.fingerprint)
    doc = next(d for p, d in store.manifest.documents.items() if p.endswith("assert.txt"))
    tokens = store.tokens(doc.start, doc.end)
    keys = document_keys(engine, tokens)
    probe = np.array([5, 50, 120, len(tokens) - 12])
    res = store.search(keys[probe], k=8, continuation=6)
    assert res.similarity.shape == (4, 8) and res.continuations.shape == (4, 8, 6)
    assert (res.positions[:, 0] == doc.start + probe).all()
    assert (res.similarity[:, 0] > 0.99).all()
    for row, p in enumerate(probe):
        assert res.continuations[row, 0].tolist() == tokens[p + 1 : p + 7].tolist()
    # continuations never run past their document's end
    last = store.search(keys[-1:], k=1, continuation=6)
    assert last.continuations[0, 0, 0] == tokens[-1] and (last.continuations[0, 0, 1:] == -1).all()


def test_incremental_add_change_delete(engine, corpus, tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(corpus, folder, ignore=shutil.ignore_patterns("huge.txt", "*.pdf", "*.docx", "blob.dat"))
    store_dir = tmp_path / "store"
    first = index_paths(engine, store_dir, [folder])
    again = index_paths(engine, store_dir, [folder])
    assert again.tokens == 0 and not (again.added or again.updated or again.removed)
    assert again.unchanged == len(first.added)

    (folder / "new.txt").write_text("A brand new document about speculative decoding.")
    (folder / "notes.md").write_text("# Notes\n\nRewritten notes about generators and iterators.\n")
    (folder / "assert.txt").unlink()
    os.utime(folder / "break.txt", (time.time() + 5, time.time() + 5))  # touched, not changed
    report = index_paths(engine, store_dir, [folder])
    assert [Path(p).name for p in report.added] == ["new.txt"]
    assert [Path(p).name for p in report.updated] == ["notes.md"]
    assert [Path(p).name for p in report.removed] == ["assert.txt"]
    store = DocumentStore.open(store_dir)
    names = sorted(Path(p).name for p in store.manifest.documents)
    assert "assert.txt" not in names and "new.txt" in names and names.count("notes.md") == 1
    live = sum(d.n_tokens - 1 for d in store.manifest.documents.values())
    assert store.n_vectors == live  # removed and replaced documents left no vectors behind


def test_model_mismatch_is_refused(built, tmp_path):
    store_dir, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(store_dir, copy)
    with pytest.raises(StoreError, match="indexed with model"):
        DocumentStore.open(copy, fingerprint="0" * 32)
    proc = run_cli("index", str(tmp_path), "--store", str(copy))
    assert proc.returncode == 0  # same model: fine
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model_fingerprint"] = "f" * 32
    (copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("index", str(tmp_path / "copy"), "--store", str(copy))
    assert proc.returncode == 2 and "indexed with model" in proc.stderr and "Traceback" not in proc.stderr


def test_not_a_store_and_corrupted_manifest(tmp_path, corpus):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    proc = run_cli("index", str(corpus / "notes.md"), "--store", str(other))
    assert proc.returncode == 2 and "not a sense-local store" in proc.stderr
    assert sorted(p.name for p in other.iterdir()) == ["important.txt"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json")
    proc = run_cli("index", str(corpus / "notes.md"), "--store", str(broken))
    assert proc.returncode == 2 and "corrupted manifest" in proc.stderr
    assert (broken / "manifest.json").read_text() == "{ not json"

    proc = run_cli("index", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr


def test_kill_during_indexing_leaves_a_loadable_store_and_resumes(engine, tmp_path):
    from pydoc_data.topics import topics

    folder = tmp_path / "docs"
    folder.mkdir()
    names = ["if", "while", "for", "try", "with", "raise", "return", "lambda"]
    for t in names:
        (folder / f"{t}.txt").write_text(topics[t][:2500])
    store_dir = tmp_path / "store"
    cmd = [sys.executable, "-m", "sense_local.cli", "index", str(folder), "--store", str(store_dir),
           "--commit-every", "0", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until at least two documents are committed with their keys
            try:
                docs = json.loads((store_dir / "manifest.json").read_text())["documents"].values()
                done = sum(d["keyed"] for d in docs)
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    store = DocumentStore.open(store_dir, fingerprint=engine.fingerprint)  # loadable, consistent
    assert len(store.manifest.documents) == len(names)  # every document's words came first, in one commit
    keyed = [d for d in store.manifest.documents.values() if d.keyed]
    assert 2 <= len(keyed) < len(names)
    assert store.n_vectors == sum(d.n_tokens - 1 for d in keyed)
    del store
    report = index_paths(engine, store_dir, [folder])  # nothing new: the model reads what it had not
    assert report.unchanged == len(names) and not report.added and report.unkeyed == 0
    assert report.tokens == sum(len(engine.tokenize(topics[t][:2500])) for t in names) - sum(d.n_tokens for d in keyed)
    store = DocumentStore.open(store_dir)
    assert len(store.manifest.documents) == len(names)
    assert store.n_vectors == sum(d.n_tokens - 1 for d in store.manifest.documents.values())
    assert not [p for p in store_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("commit_every", [1e9, 0.0])
def test_pass_states_follow_each_document_and_the_commits(engine, tmp_path, commit_every):
    """on_pass says, document by document, what the model has read and what is committed: a document
    read since the last commit is "read, saved at the next commit" (the manifest on disk does not key
    it yet), a committed one "indexed" (it does), the rest queued in the order they are read."""
    from pydoc_data.topics import topics

    from sense_local.datastore import PassState, document_state

    folder = tmp_path / "docs"
    folder.mkdir()
    for t in ("assert", "pass", "del"):
        (folder / f"{t}.txt").write_text(topics[t])
    store_dir = tmp_path / "store"
    seen: list[tuple[PassState, dict]] = []

    def on_pass(state: PassState) -> None:
        docs = json.loads((store_dir / "manifest.json").read_text())["documents"]
        seen.append((state, {p: d["keyed"] for p, d in docs.items()}))

    index_paths(engine, store_dir, [folder], commit_every=commit_every, on_pass=on_pass)
    first, order = seen[0][0], list(seen[0][0].queued)
    assert len(order) == 3 and not first.reading and not first.read and not first.saved
    # the second document begins: the first is read, the third waits
    state, keyed = next((s, k) for s, k in seen if s.reading == order[1])
    assert document_state(order[2], keyed[order[2]], state) == "by words only (queued)"
    assert document_state(order[1], keyed[order[1]], state) == "reading now (0%)"
    assert document_state(order[1], keyed[order[1]], None) == "by words only (the model reads it next)"
    if commit_every:  # nothing committed yet: read, not searched by its keys
        assert not keyed[order[0]] and document_state(order[0], keyed[order[0]], state) == "read, saved at the next commit"
    else:  # committed after each document
        assert keyed[order[0]] and order[0] in state.saved and document_state(order[0], False, state) == "indexed"
    assert any(0 < s.reading_done == s.reading_total for s, _ in seen)  # a window read, the reading says so
    last, keyed = seen[-1]
    assert last.saved == set(order) and not last.read and not last.queued and all(keyed.values())
    assert {document_state(p, keyed[p], last) for p in order} == {"indexed"}
