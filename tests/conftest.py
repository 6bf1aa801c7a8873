"""Shared fixtures: the real models through the real llama.cpp engine.

The bulk of the suite runs on the registry's fast `test` model (SmolLM2-135M): SENSE_MODEL names it
for this process and every CLI subprocess. Tests marked for the `default` model (the 1.5B users
chat with) take the `default_engine` fixture or pass `--model default`.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sense_local as sl
from sense_local.chat_template import chat_tokens

ROOT = Path(__file__).resolve().parent.parent
os.environ["SENSE_MODEL"] = "test"  # the fast model, unless a test asks for the default one


@pytest.fixture(scope="session")
def model_path() -> Path:
    return sl.resolve_model()


@pytest.fixture(scope="session")
def engine(model_path):
    eng = sl.Engine(model_path, n_ctx=4096)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def default_engine():
    """The real default chat model (Qwen2.5-Coder-1.5B-Instruct): a few end-to-end tests only."""
    eng = sl.Engine(sl.resolve_model("default"), n_ctx=4096)
    yield eng
    eng.close()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Caches and stores go to a per-session temporary home, never the user's."""
    home = tmp_path_factory.getbasetemp() / "sense-home"
    monkeypatch.setenv("SENSE_HOME", str(home))
    # conversations kept on disk (kv_disk.py) per test: one test's chat must not resume in another's
    monkeypatch.setenv("SENSE_KV_STATES", str(tmp_path_factory.mktemp("kv-states")))


@pytest.fixture
def cost_curve_file(tmp_path, monkeypatch) -> Path:
    """The model's saved cost curve redirected to a temporary file (none there yet), SENSE_COST_FLAT unset."""
    from sense_local.speculative import cost
    path = tmp_path / "cost" / "model.json"
    monkeypatch.setattr(cost, "_cache_file", lambda engine: path)
    monkeypatch.delenv("SENSE_COST_FLAT", raising=False)
    return path


def server_env() -> dict:
    """The environment of a server a test starts: conversations it keeps on disk (kv_disk.py) go to a
    folder of its own (a module's server starts before any test's own folder is set, and must not
    resume from another module's server); removed when the test run ends."""
    folder = tempfile.mkdtemp(prefix="sense-kv-states-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return {**os.environ, "SENSE_KV_STATES": folder}


def chat(engine, text: str) -> list[int]:
    return chat_tokens(engine, [{"role": "user", "content": text}])


def run_cli(*args: str, env: dict | None = None, stdin: str | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sense_local.cli", *args],
        capture_output=True, text=True, env=full_env, input=stdin, cwd=ROOT, timeout=300, **kw,
    )


def pydoc_topics_store(engine, tmp_path_factory, name: str, topics: list[str]) -> Path:
    """A real store of Python's reference-doc topics (one .txt each), indexed with `engine`."""
    from pydoc_data.topics import topics as texts

    from sense_local.datastore import index_paths

    docs = tmp_path_factory.mktemp(f"{name}-docs")
    for topic in topics:
        (docs / f"{topic}.txt").write_text(texts[topic])
    out = tmp_path_factory.mktemp(name) / "store"
    index_paths(engine, out, [docs])
    return out
