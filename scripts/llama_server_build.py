"""Build llama.cpp's own `llama-server` from the llama.cpp that the installed llama-cpp-python vendors:
the peer `sense-local bench --peers` measures us against (same commit, same flags, same machine).

The source is llama-cpp-python's sdist (`pip download --no-binary :all:`, kept in the cache so a
rebuild needs no network); it is configured with the flags of the wheel rung that runs on this
machine (scripts/llama_build.py's verdict: CMAKE_ARGS, CFLAGS, CXXFLAGS; not our wheel's patches,
scripts/llama_patches.py: the peer is llama.cpp as its users build it) plus
`-DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF`, and only the `llama-server` target is built (about
7 minutes on 2 cores). llama.cpp's defaults are kept otherwise (shared libraries, OpenMP), as a user
who builds llama.cpp gets them; the binary and its libraries land in one folder with an $ORIGIN
rpath, keyed like the wheel, so the build happens once per machine and flags.

    python scripts/llama_server_build.py ensure     # prints the llama-server path (building it first if needed)
    python scripts/llama_server_build.py path       # prints it, or exits 1 if it is not built

Stdlib only, like llama_build.py.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_build import LADDER, BuildEnv, _read_json, cache_root, read_machine, sdist, unpack  # noqa: E402

SERVER_FLAGS = ("-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF", "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_BUILD_RPATH=$ORIGIN")


def say(text: str) -> None:
    print(f"llama-server: {text}", file=sys.stderr, flush=True)


def build_env() -> tuple[BuildEnv, object]:
    """This machine's build environment and the wheel rung its verdict chose (the first rung when
    set-up has not run here: then the wheel would be built with it too)."""
    python_tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    benv = BuildEnv(read_machine(), python_tag)
    verdict = _read_json(cache_root() / f"verdict-{benv.machine_key()}.json")
    rung = next((r for r in LADDER if r.name == verdict.get("rung")), LADDER[0])
    return benv, rung


def server_dir() -> Path:
    benv, rung = build_env()
    return cache_root() / "llama-server" / benv.build_key(rung)


def build(target: Path) -> Path:
    benv, rung = build_env()
    flags = benv.env_for(rung)
    source = sdist(sys.executable, say)
    start = time.monotonic()
    log = target.parent / f"{target.name}.log"
    say(f"building llama-server {benv.describe(rung)} from {source.name}: about 7 minutes on 2 cores; log {log}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, log.open("w") as out:
        root = unpack(source, tmp) / "vendor" / "llama.cpp"  # without our patches: llama.cpp as its users build it
        env = {**os.environ, "CFLAGS": flags["CFLAGS"], "CXXFLAGS": flags["CXXFLAGS"]}
        configure = ["cmake", "-S", str(root), "-B", str(root / "build"), *SERVER_FLAGS,
                     *shlex.split(flags["CMAKE_ARGS"])]
        jobs = str(os.cpu_count() or 2)
        compile_ = ["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j", jobs]
        for cmd in (configure, compile_):
            out.write("$ " + shlex.join(cmd) + "\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
                raise SystemExit(f"{tail}\nllama-server: error: the build failed; full log: {log}")
        bin_dir = root / "build" / "bin"
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(bin_dir), target)  # the folder gets its final name only once it is whole
    say(f"built in {time.monotonic() - start:.0f} s: {target / 'llama-server'}")
    return target / "llama-server"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("ensure", "path"))
    args = parser.parse_args(argv)
    binary = server_dir() / "llama-server"
    if not binary.exists():
        if args.command == "path":
            return 1
        if shutil.which("cmake") is None:
            raise SystemExit("llama-server: error: building it needs cmake (pip install cmake, or your package manager)")
        binary = build(server_dir())
    print(binary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
