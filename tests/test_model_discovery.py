"""`sense-local models` finds GGUF files where Ollama, the Hugging Face cache, LM Studio and llama.cpp keep them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


def fake_stores(home: Path, model: Path) -> None:
    """Real directory layouts of each tool, holding the test model."""
    digest = "sha256:" + "ab" * 32
    ollama = home / ".ollama" / "models"
    _place(model, ollama / "blobs" / digest.replace(":", "-"))
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "cd" * 32},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": digest, "size": model.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "ef" * 32, "size": 10},
        ],
    }
    path = ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    hf = home / ".cache" / "huggingface" / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF"
    _place(model, hf / "blobs" / ("12" * 32))
    snapshot = hf / "snapshots" / ("9f" * 20) / "smollm2-135m-instruct-q8_0.gguf"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("..") / ".." / "blobs" / ("12" * 32))
    (hf / "refs").mkdir()
    (hf / "refs" / "main").write_text("9f" * 20)
    lmstudio = home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-GGUF" / "SmolLM2-135M-Q8_0.gguf"
    _place(model, lmstudio)
    (home / ".cache" / "llama.cpp").mkdir(parents=True)
    (home / ".cache" / "llama.cpp" / "not-a-model.gguf").write_text("hello")  # no GGUF magic: not listed


def test_models_lists_registry_and_other_tools(tmp_path, model_path):
    fake_stores(tmp_path, model_path)
    env = {"HOME": str(tmp_path), "OLLAMA_MODELS": "", "HF_HOME": "", "HF_HUB_CACHE": "", "LLAMA_CACHE": ""}
    proc = run_cli("models", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["qwen2.5-coder-1.5b-instruct-q4_k_m"]["roles"] == ["default"]
    assert rows["qwen2.5-coder-0.5b-instruct-q4_k_m"]["license"].startswith("Apache-2.0")
    found = {name: row for name, row in rows.items() if row["source"] != "registry"}
    assert set(found) == {
        "ollama:smollm2:135m",
        "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf",
        "lmstudio:lmstudio-community/SmolLM2-GGUF/SmolLM2-135M-Q8_0.gguf",
    }
    for row in found.values():
        assert row["architecture"] == "llama" and row["quantization"] == "Q8_0"
        assert row["bytes"] == model_path.stat().st_size
    table = run_cli("models", env=env)
    assert "ollama:smollm2:135m" in table.stdout and "[default]" in table.stdout


def test_a_found_model_is_accepted_by_name(tmp_path, model_path):
    fake_stores(tmp_path, model_path)
    env = {"HOME": str(tmp_path), "OLLAMA_MODELS": "", "HF_HOME": "", "HF_HUB_CACHE": "", "LLAMA_CACHE": ""}
    for name in ("ollama:smollm2:135m", "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf"):
        proc = run_cli("info", name, "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["architecture"] == "llama"
    missing = run_cli("info", "ollama:nothing:here", env=env)
    assert missing.returncode == 2 and "sense-local models" in missing.stderr
    assert missing.stderr.strip().count("\n") == 0
