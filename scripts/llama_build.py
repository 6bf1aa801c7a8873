"""Install a llama-cpp-python build that has been *seen to run* on this machine (set-up time only).

A build made with GGML_NATIVE compiles for every feature the CPU reports, and some virtual machines
report AMX without letting it run: the first real decode then dies with SIGILL. So this script
builds, installs, runs a real decode in a subprocess (the probe), and on SIGILL moves down a ladder
of builds until one runs:

    native           GGML_NATIVE (the fastest build for this CPU)
    native-no-amx    the same without AMX (CFLAGS/CXXFLAGS -mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
    portable         GGML_NATIVE=OFF: AVX2/FMA/F16C, what almost every x86-64 of the last decade has

Each wheel is built from llama-cpp-python's sdist (kept in the cache) with our patches to the
llama.cpp it vendors (llama_patches.py), pip's cache off, into a wheelhouse keyed by everything that
shapes the build (llama-cpp-python version, Python, CPU model and flags, CMAKE_ARGS, CFLAGS,
CXXFLAGS, the rung, the patches), so a wheel built for other flags or another CPU is never handed
back. The verdict (which rung ran on this machine) is remembered next to the wheelhouse, so a second
clone on the same machine installs the passing wheel in seconds; a changed CPU or CMAKE_ARGS gives
another key and a fresh choice, a changed patch a new wheel of the same rung.

    python scripts/llama_build.py ensure --probe-model PATH [--python .venv/bin/python]

Stdlib only: it runs before sense-local itself is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_patches  # noqa: E402

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
# In every build: llama.cpp's RPC backend (`sense-local rpc-worker`, `--rpc`). It only adds a backend
# that is used when workers are registered; local decoding is the same code.
ALWAYS_CMAKE_ARGS = "-DGGML_RPC=ON"
HERE = Path(__file__).resolve().parent
PROBE_SCRIPT = HERE / "llama_probe.py"


@dataclass(frozen=True)
class Rung:
    """One build configuration, added on top of the user's own CMAKE_ARGS / CFLAGS."""

    name: str
    cmake_args: str = ""  # appended to $CMAKE_ARGS
    cflags: str = ""  # appended to $CFLAGS and $CXXFLAGS
    why: str = ""  # said when this rung is chosen after another failed


LADDER = (
    Rung("native", why="built for every feature this CPU reports"),
    Rung("native-no-amx", cflags=NO_AMX,
         why="the native build died in a real decode (SIGILL or SIGSEGV: the CPU reports AMX but faults on it)"),
    Rung("portable", cmake_args="-DGGML_NATIVE=OFF",
         why="native builds died with SIGILL in a real decode; this one uses AVX2/FMA/F16C only"),
)


@dataclass(frozen=True)
class Machine:
    arch: str  # platform.machine(): x86_64, arm64, ...
    cpu: str  # model name
    flags: frozenset[str]  # CPU feature flags as the OS reports them

    @property
    def reports_amx(self) -> bool:
        return any(f.startswith("amx") for f in self.flags)

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "i386")


@dataclass
class Probe:
    """What one real decode in a subprocess did."""

    ok: bool
    signal: int | None = None  # the signal that killed it, if any
    returncode: int = 0
    detail: str = ""  # the probe's last output lines
    build_failed: bool = False  # the wheel did not even build

    @property
    def sigill(self) -> bool:
        return self.signal == signal.SIGILL

    @property
    def sigsegv(self) -> bool:
        return self.signal == signal.SIGSEGV


def next_rung(machine: Machine, tried: list[tuple[Rung, Probe]], user_cmake_args: str = "") -> Rung | None:
    """The next build to try after `tried`, or None to stop (the last one ran, or retrying cannot help).

    Only an illegal instruction moves down the ladder: any other failure (a build error, a crash
    elsewhere, a bad model) would fail the same way with other CPU flags. One exception: on an x86
    CPU that reports AMX, a segmentation fault of the native build moves to the no-AMX rung (seen on
    an Intel Xeon VM: the native build with GGML_RPC died in `ldtilecfg` inside ggml's AMX matmul with
    SIGSEGV, where the build without RPC had died with SIGILL; the no-AMX build ran). The no-AMX rung is only
    worth a build on an x86 CPU that reports AMX, and the ladder never overrides a GGML_NATIVE that
    the user set in CMAKE_ARGS (their choice, their flags).
    """
    if not tried:
        return LADDER[0]
    last_rung, last = tried[-1]
    amx_fault = last.sigsegv and last_rung is LADDER[0] and machine.is_x86 and machine.reports_amx
    if last.ok or not (last.sigill or amx_fault):
        return None
    names = [r.name for r, _ in tried]
    for rung in LADDER[LADDER.index(last_rung) + 1:]:
        if rung.name in names:
            continue
        if rung.name == "native-no-amx" and not (machine.is_x86 and machine.reports_amx):
            continue
        if rung.cflags and not machine.is_x86:
            continue
        if rung.cmake_args and "GGML_NATIVE" in user_cmake_args:
            continue
        return rung
    return None


def read_machine() -> Machine:
    arch = platform.machine()
    cpu, flags = platform.processor() or arch, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu in (arch, platform.processor() or arch):
                cpu = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # macOS and others: the brand string is enough to key a build
        if sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
            cpu = out.stdout.strip() or cpu
    return Machine(arch, cpu, frozenset(flags))


@dataclass
class BuildEnv:
    """Everything that shapes a build; its key names the wheel's folder in the wheelhouse."""

    machine: Machine
    python_tag: str  # e.g. cp311
    cmake_args: str = field(default_factory=lambda: os.environ.get("CMAKE_ARGS", ""))
    cflags: str = field(default_factory=lambda: os.environ.get("CFLAGS", ""))
    cxxflags: str = field(default_factory=lambda: os.environ.get("CXXFLAGS", ""))

    def env_for(self, rung: Rung) -> dict[str, str]:
        return {
            "CMAKE_ARGS": " ".join(x for x in (ALWAYS_CMAKE_ARGS, self.cmake_args, rung.cmake_args) if x),
            "CFLAGS": " ".join(x for x in (self.cflags, rung.cflags) if x),
            "CXXFLAGS": " ".join(x for x in (self.cxxflags, rung.cflags) if x),
        }

    def machine_key(self) -> str:
        """The machine and the user's flags: which rung runs is a fact about these."""
        blob = json.dumps([LLAMA_CPP_PYTHON, self.python_tag, self.machine.arch, self.machine.cpu,
                           sorted(self.machine.flags), ALWAYS_CMAKE_ARGS, self.cmake_args, self.cflags,
                           self.cxxflags])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def build_key(self, rung: Rung) -> str:
        """The machine, its flags and the rung: llama-server's build (the unpatched peer) is keyed by it."""
        return f"{self.machine_key()}-{rung.name}"

    def wheel_key(self, rung: Rung) -> str:
        """The wheel's: the build key and our patches (llama_patches.py), so a changed patch is a new wheel."""
        return f"{self.build_key(rung)}-p{llama_patches.digest()}"

    def describe(self, rung: Rung) -> str:
        flags = self.env_for(rung)
        shown = " ".join(f"{k}='{v}'" for k, v in flags.items() if v)
        return f"'{rung.name}'" + (f" with {shown}" if shown else "")


def cache_root() -> Path:
    if os.environ.get("SENSE_HOME"):
        return Path(os.environ["SENSE_HOME"]) / "cache" / "llama-build"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sense-local" / "llama-build"


def mark_changed() -> None:
    """Tell scripts/setup that this run did something (it then says 'done', not 'nothing to do')."""
    if os.environ.get("SENSE_SETUP_MARK"):
        Path(os.environ["SENSE_SETUP_MARK"]).touch()


def say(text: str) -> None:
    print(f"setup: {text}", flush=True)


def sdist(python: str = sys.executable, tell=say) -> Path:
    """llama-cpp-python's source distribution, downloaded once into the cache (the wheel and
    llama-server are built from it)."""
    folder = cache_root() / "sdist"
    version = LLAMA_CPP_PYTHON.split("==")[1]
    found = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    tell(f"downloading the {LLAMA_CPP_PYTHON} source (once)")
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "-d", tmp, LLAMA_CPP_PYTHON], check=True)
        got = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        final = folder / got.name
        shutil.move(str(got), final)
    return final


def unpack(source: Path, into: str) -> Path:
    """The sdist unpacked under `into`: its llama_cpp_python-<version> folder."""
    with tarfile.open(source) as tar:
        try:
            tar.extractall(into, filter="data")  # no links or paths out of the folder
        except TypeError:  # Python before 3.11.4 has no extraction filters
            tar.extractall(into)
    return next(Path(into).glob("llama_cpp_python-*"))


def build_wheel(benv: BuildEnv, rung: Rung, python: str, wheelhouse: Path, log: Path) -> Path | None:
    """Build the wheel for one rung from the sdist with our patches (llama_patches.py), pip's cache
    off; return it, or None if the build failed."""
    target = wheelhouse / benv.wheel_key(rung)
    wheels = sorted(target.glob("llama_cpp_python-*.whl")) if target.is_dir() else []
    if wheels and not os.environ.get("SENSE_REBUILD"):
        return wheels[-1]
    source = sdist(python)
    say(f"building llama.cpp {benv.describe(rung)}: about 7 minutes on 2 cores; log {log}")
    env = {**os.environ, **benv.env_for(rung)}
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=wheelhouse) as tmp, log.open("w") as out:
        folder = unpack(source, tmp)
        try:
            names = llama_patches.apply(folder / "vendor" / "llama.cpp")
        except ValueError as e:
            out.write(f"{e}\n")
            return None
        out.write(f"patched: {', '.join(names)}\n")
        out.flush()
        built_dir = Path(tmp) / "wheel"
        proc = subprocess.run(
            [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(built_dir), str(folder)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
        built = sorted(built_dir.glob("llama_cpp_python-*.whl"))
        if proc.returncode != 0 or not built:
            return None
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        final = target / built[-1].name
        shutil.move(str(built[-1]), final)  # the folder appears only with a whole wheel in it
    say(f"built in {time.monotonic() - start:.0f} s")
    return final


def install_wheel(python: str, wheel: Path) -> None:
    """This wheel, replacing whatever llama-cpp-python the venv holds; then its dependencies."""
    quiet = ["-q", "--disable-pip-version-check", "--no-cache-dir"]
    subprocess.run([python, "-m", "pip", "install", *quiet, "--no-deps", "--force-reinstall", str(wheel)], check=True)
    subprocess.run([python, "-m", "pip", "install", *quiet, str(wheel)], check=True, stderr=subprocess.DEVNULL)


def run_probe(python: str, model: Path, gpu_layers: int, timeout: float = 300.0) -> Probe:
    """A real decode of `model` in a subprocess: the only test that tells a build runs on this CPU."""
    try:
        proc = subprocess.run([python, str(PROBE_SCRIPT), str(model), "--gpu-layers", str(gpu_layers)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Probe(ok=False, returncode=-1, detail=f"no answer in {timeout:.0f} s")
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    if proc.returncode < 0:
        return Probe(ok=False, signal=-proc.returncode, returncode=proc.returncode, detail=tail)
    return Probe(ok=proc.returncode == 0, returncode=proc.returncode, detail=tail)


def gpu_layers_for(cmake_args: str) -> int:
    """Offload every layer when the build has a GPU backend, so the probe exercises it."""
    upper = cmake_args.upper()
    return -1 if any(f"-DGGML_{b}=ON" in upper for b in ("CUDA", "METAL", "VULKAN", "HIPBLAS", "HIP", "SYCL")) else 0


def stamp_text(benv: BuildEnv, rung: Rung, wheel: Path) -> str:
    return json.dumps({"build": benv.wheel_key(rung), "wheel": wheel.name})


def ensure(python: str, probe_model: Path, stamp: Path) -> int:
    machine = read_machine()
    tag = subprocess.run([python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                         capture_output=True, text=True, check=True).stdout.strip()
    benv = BuildEnv(machine, tag)
    root = cache_root()
    wheelhouse = root / "wheels"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    verdict_file = root / f"verdict-{benv.machine_key()}.json"
    rebuild = bool(os.environ.get("SENSE_REBUILD"))

    # Fast path: the stamp names the build this venv holds, the verdict still says it runs here, and
    # it is the wheel these patches make (a changed patch builds the verdict's rung again).
    verdict = {} if rebuild else _read_json(verdict_file)
    known = next((r for r in LADDER if r.name == verdict.get("rung")), None)
    if (known is not None and verdict.get("build") == benv.wheel_key(known) and stamp.exists()
            and _read_json(stamp).get("build") == verdict["build"]):
        return 0

    mark_changed()
    gpu_layers = gpu_layers_for(benv.cmake_args)
    tried: list[tuple[Rung, Probe]] = []
    rung = known or next_rung(machine, tried, benv.cmake_args)
    while rung is not None:
        log = root / f"build-{benv.wheel_key(rung)}.log"
        wheel = build_wheel(benv, rung, python, wheelhouse, log)
        if wheel is None:
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
            print(f"{tail}\nsetup: error: building llama-cpp-python {benv.describe(rung)} failed; "
                  f"full log: {log}", file=sys.stderr)
            return 1
        install_wheel(python, wheel)
        probe = run_probe(python, probe_model, gpu_layers)
        tried.append((rung, probe))
        if probe.ok:
            why = "" if rung == LADDER[0] else f": {rung.why}"
            say(f"llama.cpp build '{rung.name}' runs here ({machine.cpu}){why}")
            _write_json(verdict_file, {"rung": rung.name, "build": benv.wheel_key(rung), "cpu": machine.cpu,
                                       "tried": [[r.name, asdict(p)] for r, p in tried]})
            stamp.write_text(stamp_text(benv, rung, wheel))
            return 0
        what = f"signal {probe.signal}" if probe.signal else f"exit code {probe.returncode}"
        say(f"llama.cpp build '{rung.name}' failed a real decode ({what})")
        rung = next_rung(machine, tried, benv.cmake_args)
    _, last = tried[-1]
    print(f"setup: error: no llama.cpp build ran a real decode on this machine; last probe said:\n{last.detail}",
          file=sys.stderr)
    return 1


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="install a build seen to run here (build and probe as needed)")
    p.add_argument("--python", default=sys.executable, help="the venv's python")
    p.add_argument("--probe-model", required=True, type=Path, help="a small GGUF for the probe decode")
    p.add_argument("--stamp", type=Path, default=Path(".venv/.sense-local-llama"))
    args = parser.parse_args(argv)
    return ensure(args.python, args.probe_model, args.stamp)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
