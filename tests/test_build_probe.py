"""The set-up's llama.cpp build ladder: which build to try after which probe result, and the real probe."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


lb = _load("llama_build")
lp = _load("llama_patches")
AMX_XEON = lb.Machine("x86_64", "Intel(R) Xeon(R) Processor", frozenset({"avx2", "avx512f", "amx_tile", "amx_int8"}))
EPYC = lb.Machine("x86_64", "AMD EPYC 7B13", frozenset({"avx2", "fma"}))
APPLE = lb.Machine("arm64", "Apple M2", frozenset())
SIGILL = lb.Probe(ok=False, signal=signal.SIGILL, returncode=-signal.SIGILL)
SEGV = lb.Probe(ok=False, signal=signal.SIGSEGV, returncode=-signal.SIGSEGV)
RAN = lb.Probe(ok=True)
RUNG = {r.name: r for r in lb.LADDER}


def names(machine, results, user_cmake=""):
    """Walk the ladder with the given probe results; return the rungs tried."""
    tried = []
    while (rung := lb.next_rung(machine, tried, user_cmake)) is not None:
        tried.append((rung, results[len(tried)]))
    return [r.name for r, _ in tried]


def test_native_first_and_stop_when_it_runs():
    assert names(AMX_XEON, [RAN]) == ["native"]


def test_amx_that_faults_is_turned_off_before_going_portable():
    assert names(AMX_XEON, [SIGILL, RAN]) == ["native", "native-no-amx"]
    assert names(AMX_XEON, [SIGILL, SIGILL, RAN]) == ["native", "native-no-amx", "portable"]
    assert names(AMX_XEON, [SIGILL, SIGILL, SIGILL]) == ["native", "native-no-amx", "portable"]


def test_no_amx_rung_only_where_the_cpu_reports_amx():
    assert names(EPYC, [SIGILL, RAN]) == ["native", "portable"]
    assert names(APPLE, [SIGILL, RAN]) == ["native", "portable"]


def test_only_an_illegal_instruction_moves_down_the_ladder():
    assert names(EPYC, [SEGV]) == ["native"]
    assert names(AMX_XEON, [SIGILL, SEGV]) == ["native", "native-no-amx"]
    assert names(AMX_XEON, [lb.Probe(ok=False, returncode=3)]) == ["native"]
    assert names(AMX_XEON, [lb.Probe(ok=False, build_failed=True)]) == ["native"]


def test_a_segfault_of_the_native_build_on_a_cpu_reporting_amx_tries_it_without_amx():
    assert names(AMX_XEON, [SEGV, RAN]) == ["native", "native-no-amx"]
    assert names(AMX_XEON, [SEGV, SEGV]) == ["native", "native-no-amx"]


def test_a_user_choice_of_ggml_native_is_never_overridden():
    assert names(AMX_XEON, [SIGILL, SIGILL], user_cmake="-DGGML_NATIVE=ON") == ["native", "native-no-amx"]


def test_a_remembered_rung_continues_down_from_there():
    assert lb.next_rung(AMX_XEON, [(RUNG["native-no-amx"], SIGILL)]).name == "portable"


def test_build_flags_add_to_the_users_own():
    benv = lb.BuildEnv(AMX_XEON, "cp311", cmake_args="-DGGML_CUDA=on", cflags="-O2", cxxflags="")
    env = benv.env_for(RUNG["native-no-amx"])
    assert env["CMAKE_ARGS"] == lb.ALWAYS_CMAKE_ARGS + " -DGGML_CUDA=on"
    assert env["CFLAGS"] == "-O2 " + lb.NO_AMX and env["CXXFLAGS"] == lb.NO_AMX
    assert benv.env_for(RUNG["portable"])["CMAKE_ARGS"] == lb.ALWAYS_CMAKE_ARGS + " -DGGML_CUDA=on -DGGML_NATIVE=OFF"


def test_wheels_are_keyed_by_everything_that_shapes_the_build():
    base = lb.BuildEnv(AMX_XEON, "cp311", cmake_args="", cflags="", cxxflags="")
    keys = {
        base.build_key(RUNG["native"]),
        base.build_key(RUNG["native-no-amx"]),
        lb.BuildEnv(EPYC, "cp311", cmake_args="", cflags="", cxxflags="").build_key(RUNG["native"]),
        lb.BuildEnv(AMX_XEON, "cp312", cmake_args="", cflags="", cxxflags="").build_key(RUNG["native"]),
        lb.BuildEnv(AMX_XEON, "cp311", cmake_args="-DGGML_CUDA=on", cflags="", cxxflags="").build_key(RUNG["native"]),
        lb.BuildEnv(AMX_XEON, "cp311", cmake_args="", cflags="-O3", cxxflags="").build_key(RUNG["native"]),
    }
    assert len(keys) == 6
    assert base.build_key(RUNG["native"]) == lb.BuildEnv(AMX_XEON, "cp311", "", "", "").build_key(RUNG["native"])


def test_our_patches_apply_to_the_pinned_llama_cpp_source_and_only_to_it(tmp_path):
    """The source our wheel is built from (set-up downloaded it): the CPU backend's work buffer comes
    from ggml's 64-byte aligned allocator, which gives buffers of 2 MB or more huge pages on Linux, and
    flash attention runs its tiled kernel from 8 rows, on the tile's rows only; a source without the
    patched text (here: patched already, as another llama-cpp-python version would be) is refused,
    not built."""
    import tarfile

    root = tmp_path / "llama.cpp"
    wanted = {patch.path for patch in lp.PATCHES}
    with tarfile.open(lb.sdist()) as tar:  # only the patched files: the whole source is ~75 MB
        for member in tar.getmembers():
            _, _, inside = member.name.partition("/vendor/llama.cpp/")
            if inside in wanted:
                (root / inside).parent.mkdir(parents=True, exist_ok=True)
                (root / inside).write_bytes(tar.extractfile(member).read())
    assert {str(p.relative_to(root)) for p in root.rglob("*.c*")} == wanted
    cpu, ggml, ops = root / lp.ALIGNED_WORK_BUFFER.path, root / lp.HUGE_PAGES.path, root / lp.FA_TILED.path
    assert "work_data = new uint8_t[cplan.work_size]" in cpu.read_text() and "MADV_HUGEPAGE" not in ggml.read_text()
    assert "neq1 >= Q_TILE_SZ);" in ops.read_text()
    tile_loops = ops.read_text().count("tq < tile_rows; tq++) {")  # loops over the tile's own rows
    assert lp.apply(root) == ["aligned-work-buffer", "huge-pages", "fa-tiled-small"]
    patched = cpu.read_text(), ggml.read_text(), ops.read_text()
    assert "new uint8_t[" not in patched[0] and "delete[] cpu_" not in patched[0]
    assert patched[0].count("ggml_aligned_malloc(") == 2 and patched[0].count("ggml_aligned_free(") == 3
    assert patched[1].count("MADV_HUGEPAGE);") == 1 and "#include <sys/mman.h>" in patched[1]
    assert "(neq1 >= sense_fa_tiled_min() && nek1 >= 512)" in patched[2] and "Q_TILE_SZ, DK, KV_TILE_SZ)" not in patched[2]
    assert patched[2].count("tq < tile_rows; tq++) {") == tile_loops + 3 and "tq = 0; tq < Q_TILE_SZ;" not in patched[2]
    with pytest.raises(ValueError, match="aligned-work-buffer: .* 0 times, expected"):
        lp.apply(root)
    assert (cpu.read_text(), ggml.read_text(), ops.read_text()) == patched  # nothing half-applied


def test_gpu_builds_probe_with_layers_offloaded():
    assert lb.gpu_layers_for("-DGGML_CUDA=on") == -1
    assert lb.gpu_layers_for("-DGGML_METAL=ON -DFOO=1") == -1
    assert lb.gpu_layers_for("") == 0 and lb.gpu_layers_for("-DGGML_NATIVE=OFF") == 0


def test_this_machine_is_read():
    machine = lb.read_machine()
    assert machine.arch and machine.cpu


@pytest.mark.parametrize("which", ["probe", "test", "default"])
def test_the_real_probe_decodes_with_the_installed_build(which):
    """The smoke decode scripts/setup runs after each build: it must pass with the build installed."""
    import sense_local as sl

    model = sl.resolve_model(which)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "llama_probe.py"), str(model)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("probe: ok, decoded") and "CPU" in proc.stdout


def test_probe_result_of_a_dying_process_names_its_signal(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nkill -ILL $$\n")
    fake.chmod(0o755)
    probe = lb.run_probe(str(fake), tmp_path / "none.gguf", 0, timeout=30)
    assert not probe.ok and probe.sigill


def test_an_illegal_instruction_at_run_time_gives_the_rebuild_hint():
    code = "import os, signal, sense_local; os.kill(os.getpid(), signal.SIGILL)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGILL
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SENSE_REBUILD=1 scripts/setup" in lines[0]


def test_backends_are_read_from_the_system_info_line():
    from sense_local.native import backends, system_info

    assert backends("CPU : SSE3 = 1 | AVX = 1 | REPACK = 1 |") == ["CPU"]
    assert backends("CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 |") == ["CUDA", "CPU"]
    assert backends("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 |") == ["Metal", "CPU"]
    assert "CPU" in backends(system_info())
