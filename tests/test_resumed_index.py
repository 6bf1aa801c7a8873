"""Resumed work says what it is (issue 35): documents an interrupted model pass left searchable by words
only are owed their keys; an index run asked for nothing new does not silently pay that debt."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli


@pytest.fixture
def interrupted(tmp_path):
    """A store with small/a.txt fully read and big/big.txt left by words only by a kill -9 mid-pass."""
    from pydoc_data.topics import topics

    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()
    (tmp_path / "small" / "a.txt").write_text("The brass kettle inn closes every Tuesday.\n" * 20)
    (tmp_path / "big" / "big.txt").write_text("\n\n".join(topics[t] for t in sorted(topics))[:80_000])
    store = tmp_path / "store"
    assert run_cli("index", str(tmp_path / "small"), "--store", str(store)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "sense_local.cli", "index", str(tmp_path / "big"), "--store",
                             str(store)], stderr=subprocess.PIPE, text=True, cwd=ROOT, env=os.environ.copy())
    for line in proc.stderr:  # words committed, the model pass under way: kill it
        if "searchable by words now" in line:
            break
    proc.kill()
    proc.wait()
    return tmp_path, store


def test_an_index_of_nothing_new_leaves_an_earlier_runs_debt_and_says_how_much(interrupted):
    root, store = interrupted
    result = run_cli("index", str(root / "small" / "a.txt"), "--store", str(store), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tokens"] == 0 and report["unchanged"] == 1  # nothing read: it asked for nothing new
    assert report["owed"] == 1 and report["owed_tokens"] > 5_000 and report["unkeyed"] == 1
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"event": "owed", "documents": 1, "tokens": report["owed_tokens"], "reading_now": False} in events
    said = run_cli("index", str(root / "small" / "a.txt"), "--store", str(store)).stdout
    assert f"1 document outside these paths ({report['owed_tokens']:,} tokens)" in said and "--finish-keys" in said
    verified = json.loads(run_cli("index", "--verify", "--store", str(store), "--json").stdout)
    assert verified["unkeyed"] == 1  # the store as the killed run committed it


def test_finish_keys_reads_the_owed_document_and_says_so_without_a_terminal(interrupted):
    root, store = interrupted
    owed = json.loads(run_cli("index", str(root / "small"), "--store", str(store), "--json").stdout)["owed_tokens"]
    result = run_cli("index", str(root / "small"), "--store", str(store), "--finish-keys")
    assert result.returncode == 0, result.stderr
    assert f"1 document ({owed:,} tokens) an earlier run left searchable by words only: the model reads them now" \
        in result.stderr
    assert f"indexing: 0 / {owed:,} tokens" in result.stderr  # progress lines, stderr being a pipe
    assert f"indexing: {owed:,} / {owed:,} tokens" in result.stderr
    assert f"{owed} tokens in" in result.stdout
    assert json.loads(run_cli("index", "--verify", "--store", str(store), "--json").stdout)["unkeyed"] == 0


def test_an_index_of_the_owed_documents_folder_reads_it(interrupted):
    root, store = interrupted
    report = json.loads(run_cli("index", str(root / "big"), "--store", str(store), "--json").stdout)
    assert report["tokens"] > 5_000 and report["owed"] == 0 and report["unkeyed"] == 0
