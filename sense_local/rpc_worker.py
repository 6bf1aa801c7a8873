"""`sense-local rpc-worker`: ggml's RPC server from this package's own llama.cpp build (issue 33).

The server is the RPC backend's `ggml_backend_rpc_start_server(endpoint, cache_dir, n_threads,
n_devices, devices)`, found in ggml's backend registry: it listens on endpoint, serves one client at a
time, and computes the layers a client placed on it with the devices given (the machine's GPUs if
this build has any, else its CPU, as llama.cpp's own rpc-server chooses). It never returns, so it runs
in a thread with the signals blocked, and the main thread waits: Ctrl+C ends the worker at once.

`--mem MiB` is the memory the worker reports to clients, whose split of a model's layers follows it
(rpc.place); it is not a cap on what the worker allocates.
"""
from __future__ import annotations

import ctypes
import ipaddress
import signal
import socket
import sys
import threading

from .errors import SenseError
from .rpc import DEV_ACCEL, DEV_CPU, ggml, rpc_entry

_START_SERVER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_void_p))
# struct ggml_backend_device starts with its interface, whose third entry is
# get_memory(dev, size_t * free, size_t * total) (ggml-backend-impl.h)
_GET_MEMORY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))
_GET_MEMORY_SLOT = 2


def check_host(host: str) -> bool:
    """Whether `host` is a loopback address; SenseError unless it is an IPv4 address to bind to."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise SenseError(f"--host {host}: give an IPv4 address (llama.cpp's RPC server binds IPv4 only), "
                         "e.g. 127.0.0.1") from None
    return address.is_loopback


def serving_devices() -> list[int]:
    """The devices a worker computes with: every accelerator of this build, else the CPU."""
    lib = ggml()
    found = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    gpus = [d for d in found if lib.ggml_backend_dev_type(d) not in (DEV_CPU, DEV_ACCEL)]
    return gpus or [lib.ggml_backend_dev_by_type(DEV_CPU)]


def report_memory(devices: list[int], mib: int) -> _GET_MEMORY:
    """Make each device report `mib` MiB free and total (what clients split layers by); the callback
    returned must be kept alive while the devices are served."""

    def get_memory(_dev, free, total):  # pragma: no cover - called by ggml
        free[0] = total[0] = mib << 20

    callback = _GET_MEMORY(get_memory)
    for device in devices:
        slots = ctypes.cast(device, ctypes.POINTER(ctypes.c_void_p))
        slots[_GET_MEMORY_SLOT] = ctypes.cast(callback, ctypes.c_void_p).value
    return callback


def check_port_free(host: str, port: int) -> None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise SenseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                         + (" (choose another with --port)" if exc.errno == 98 else "")) from None


def run_worker(host: str, port: int, *, mem_mib: int | None = None, threads: int | None = None) -> int:
    """Serve until interrupted; SenseError for a bad address, a busy port or a build without RPC."""
    from .engine import default_threads

    if not 0 < port < 65536:
        raise SenseError(f"--port must be from 1 to 65535 (got {port})")
    if mem_mib is not None and mem_mib < 1:
        raise SenseError(f"--mem must be at least 1 MiB (got {mem_mib})")
    if threads is not None and threads < 1:
        raise SenseError(f"--threads must be at least 1 (got {threads})")
    loopback = check_host(host)
    check_port_free(host, port)
    start_server = rpc_entry("ggml_backend_rpc_start_server", _START_SERVER)
    devices = serving_devices()
    kept = report_memory(devices, mem_mib) if mem_mib else None
    if not loopback:
        print(f"sense-local rpc-worker: warning: listening on {host}: the RPC protocol has no authentication, "
              f"so anyone who can reach port {port} can use this worker; never on an open network",
              file=sys.stderr, flush=True)
    array = (ctypes.c_void_p * len(devices))(*devices)
    failed = threading.Event()

    def serve() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # they go to the main thread
        start_server(f"{host}:{port}".encode(), None, threads or default_threads(), len(devices), array)
        failed.set()  # it returns only when it could not listen or accept

    thread = threading.Thread(target=serve, name="rpc-server", daemon=True)
    thread.start()
    failed.wait()
    del kept
    raise SenseError(f"the RPC server on {host}:{port} stopped (see the line above)")
