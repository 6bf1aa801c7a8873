"""Input that used to crash: invalid UTF-8, symlink loops, a closed stdin, chat commands, two writers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_cli


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr


def run_bytes(*args: bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The CLI with raw bytes in argv and stdin (as a shell passes them)."""
    return subprocess.run([sys.executable.encode(), b"-m", b"sense_local.cli", *args], input=stdin,
                          capture_output=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("how", ["stdin", "argument"])
@pytest.mark.parametrize("command", [b"generate", b"ask"])
def test_invalid_utf8_is_replaced_and_said_once(command, how, tmp_path):
    bad = b"Say \xff\xfe hello"
    extra = [b"--store", str(tmp_path / "none").encode()] if command == b"ask" else []
    args = [command, b"-" if how == "stdin" else bad, b"--max-tokens", b"4", *extra]
    proc = run_bytes(*args, stdin=bad if how == "stdin" else None)
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert err.count("not valid UTF-8") == 1
    if command == b"generate":
        assert proc.returncode == 0 and proc.stdout.strip()
    else:  # no store there: the question is read, then a one-line error about the store
        assert proc.returncode == 2 and "not a sense-local store" in err


def test_invalid_utf8_system_prompt(tmp_path):
    proc = run_bytes(b"generate", b"hi", b"--system", b"be \xc3 brief", b"--max-tokens", b"3")
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr and b"not valid UTF-8" in proc.stderr


def test_a_symlink_loop_is_skipped_with_its_reason(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("A perfectly ordinary document about kettles and tea.\n" * 3)
    (docs / "loop.txt").symlink_to(docs / "loop.txt")
    (docs / "dangling.txt").symlink_to(docs / "gone.txt")
    proc = run_cli("index", str(docs), "--store", str(tmp_path / "store"), "--json")
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [os.path.basename(p) for p in report["added"]] == ["good.txt"]
    skipped = {os.path.basename(p): why for p, why in report["skipped"].items()}
    assert "loop.txt" in skipped and "dangling.txt" in skipped
    direct = run_cli("index", str(docs / "loop.txt"), "--store", str(tmp_path / "store2"))
    assert direct.returncode == 2 and direct.stderr.strip().count("\n") == 0
    _no_traceback(direct)


def test_line_chat_with_closed_stdin_ends_cleanly():
    proc = subprocess.run([sys.executable, "-m", "sense_local.cli", "chat", "--plain"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=ROOT, timeout=300, close_fds=True)
    assert proc.returncode == 0 and not proc.stderr.strip()
    closed = subprocess.run(f"'{sys.executable}' -m sense_local.cli chat --plain <&-", shell=True,
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert closed.returncode == 0, closed.stderr
    _no_traceback(closed)


def test_line_chat_commands_never_reach_the_model():
    proc = run_cli("chat", "--plain", "--max-tokens", "4", stdin="/help\n/new\n/bogus\n/quit\nthis is never sent\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # no reply was generated: every line was a command, and /quit ended it
    assert "/quit" in proc.stderr and "new conversation" in proc.stderr and "unknown command /bogus" in proc.stderr


def _index_proc(docs, store, *extra):
    return subprocess.Popen([sys.executable, "-m", "sense_local.cli", "index", str(docs), "--store", str(store),
                             "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _corpus(tmp_path, name, n):
    from pydoc_data.topics import topics

    docs = tmp_path / name
    docs.mkdir()
    for topic in list(topics)[:n]:
        (docs / f"{topic}.txt").write_text(topics[topic])
    return docs


def test_a_second_writer_is_refused_or_waits_and_the_store_stays_consistent(tmp_path, engine):
    from sense_local.datastore import DocumentStore

    first_docs, second_docs = _corpus(tmp_path, "first", 6), tmp_path / "second"
    second_docs.mkdir()
    (second_docs / "note.txt").write_text("The second indexer's only document, about harbour lighthouses.\n")
    store = tmp_path / "store"
    first = _index_proc(first_docs, store)
    deadline = time.time() + 120
    while not (store / "writer.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    busy = run_cli("index", str(second_docs), "--store", str(store))
    waiter = _index_proc(second_docs, store, "--wait")
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    w_out, w_err = waiter.communicate(timeout=600)
    assert busy.returncode == 2 and "being written by process" in busy.stderr and "--wait" in busy.stderr
    assert busy.stderr.strip().count("\n") == 0 and "Traceback" not in busy.stderr
    assert waiter.returncode == 0, w_err
    assert "waiting" in w_err
    assert json.loads(w_out)["added"] and json.loads(out)["added"]
    # every document's tokens in the store are its text re-tokenized
    opened = DocumentStore.open(store, fingerprint=engine.fingerprint)
    for path, doc in opened.manifest.documents.items():
        from sense_local.datastore.extract import extract_text
        from pathlib import Path

        want = engine.tokenize(extract_text(Path(path)).text, add_special=True)
        got = opened.tokens(doc.start, doc.start + doc.n_tokens).tolist()
        assert got == want, path
