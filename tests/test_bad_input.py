"""Bad model paths and prompts: one-line errors naming the path, exit code 2, no traceback."""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import run_cli


def _assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, model_path):
    d = tmp_path_factory.mktemp("bad")
    (d / "notgguf.gguf").write_text("hello, I am a text file pretending to be a model\n")
    with model_path.open("rb") as f:
        head = f.read(3_000_000)
    (d / "truncated.gguf").write_bytes(head)
    with model_path.open("rb") as f:
        (d / "header_only.gguf").write_bytes(f.read(2000))
    (d / "adir.gguf").mkdir()
    return d


@pytest.mark.parametrize("command", ["info", "generate"])
@pytest.mark.parametrize(
    "name, needle",
    [
        ("missing.gguf", "not found"),
        ("adir.gguf", "is a directory"),
        ("notgguf.gguf", "not a GGUF file"),
        ("truncated.gguf", "truncated"),
        ("header_only.gguf", "GGUF"),
    ],
)
def test_bad_model_file(bad_models, command, name, needle):
    path = str(bad_models / name)
    args = ["info", path] if command == "info" else ["generate", "hi", "--model", path, "--max-tokens", "2"]
    _assert_clean_error(run_cli(*args), path, needle)


def test_unreadable_model_file(tmp_path, model_path, monkeypatch, capsys):
    from pathlib import Path

    from sense_local.cli import main

    target = tmp_path / "locked.gguf"
    shutil.copyfile(model_path, target)
    target.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make opening this one file fail as it would for a user
        real_open = Path.open

        def guarded_open(self, *args, **kwargs):
            if self == target:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", guarded_open)
    code = main(["generate", "hi", "--model", str(target), "--max-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(target) in err and "cannot read" in err and "Permission denied" in err


def test_prompt_longer_than_context():
    proc = run_cli("generate", "word " * 3000, "--ctx", "512", "--max-tokens", "4")
    _assert_clean_error(proc, "prompt has", "context holds 512")


def test_unknown_method_and_bad_options():
    _assert_clean_error(run_cli("generate", "hi", "--method", "nope"), "unknown method 'nope'", "ar")
    _assert_clean_error(run_cli("generate", "hi", "--max-tokens", "0"), "--max-tokens")
    _assert_clean_error(run_cli("generate", "hi", "--temperature", "-1"), "--temperature")


def test_negative_cache_sizes():
    _assert_clean_error(run_cli("chat", "--plain", "--cache-disk", "-1", stdin=""), "--cache-disk", "-1")
    _assert_clean_error(run_cli("serve", "--cache-ram", "-2"), "--cache-ram", "-2")
