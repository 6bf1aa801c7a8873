"""llama.cpp's RPC backend through ctypes: one model's layers on other machines (issue 33).

A worker (`sense-local rpc-worker`, rpc_worker.py) is ggml's RPC server: it holds the weights and the
KV cache of the layers given to it and computes them when asked. A client names its workers with
`--rpc HOST:PORT[,...]`: each is checked here (a TCP connection and the protocol's HELLO, so one that
is down or speaks another protocol version is a one-line error naming it, not ggml's abort), then
registered through the RPC backend's add-server entry, found in ggml's backend registry
(`ggml_backend_reg_by_name("RPC")` and `ggml_backend_reg_get_proc_address`), which hands back the
worker's devices. They are *not* added to the global registry, so other models of this process (the
embedding model, a local engine beside this one) stay local. The engine gives llama.cpp those devices
(`llama_model_params.devices`, NULL-terminated) and a split (`Placement`); the local CPU keeps the
token embeddings and the layers before the offloaded ones, as llama.cpp always does.

The protocol has no authentication and no encryption (llama.cpp's own warning): a worker must never be
reachable from an open network. What happens when one dies under a loaded model: rpc_loss.py.
"""
from __future__ import annotations

import ctypes
import functools
import socket
import struct
from dataclasses import dataclass

from . import native
from .native import shared_library
from .errors import SenseError

llama_cpp = native.llama_cpp

DEFAULT_PORT = 50052
HANDSHAKE_TIMEOUT_S = 5.0  # a worker that accepts but does not answer HELLO in this time is busy or not one
# The protocol's HELLO (ggml-rpc.cpp of the vendored llama.cpp): | cmd 1 byte | size 8 bytes | payload |,
# answered by | size 8 bytes | payload |; the payload is 24 bytes of transport capabilities (zeros: plain
# TCP), the answer the server's protocol version (major, minor, patch, padding) and its capabilities.
RPC_CMD_HELLO = 14
CONN_CAPS = 24
PROTO_MAJOR = 7  # RPC_PROTO_MAJOR_VERSION of the llama.cpp this package is built with
PROTO_MINOR = 0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(text: str | list | tuple) -> tuple[Endpoint, ...]:
    """`--rpc`'s HOST:PORT[,...] (or a list of them), checked: SenseError naming the bad entry."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    out = []
    for item in (i.strip() for i in items):
        host, sep, port = item.rpartition(":")
        if not item or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SenseError(f"--rpc {item!r}: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), several "
                             "separated by commas")
        if ":" in host or host.startswith("["):
            raise SenseError(f"--rpc {item}: llama.cpp's RPC client speaks IPv4 only (give an IPv4 address or a name)")
        endpoint = Endpoint(host, int(port))
        if endpoint in out:
            raise SenseError(f"--rpc {endpoint}: named twice")
        out.append(endpoint)
    return tuple(out)


def check_worker(endpoint: Endpoint, *, handshake: bool = True) -> None:
    """SenseError (one line naming the worker) unless a worker answers at `endpoint`: it accepts a TCP
    connection and, with `handshake`, answers HELLO with this build's protocol version. llama.cpp's
    client would abort the process on each of these (ggml-rpc.cpp: GGML_ABORT on a failed connect)."""
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=HANDSHAKE_TIMEOUT_S)
    except socket.gaierror as exc:
        raise SenseError(f"RPC worker {endpoint}: unknown host ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise SenseError(f"RPC worker {endpoint}: connection refused (is `sense-local rpc-worker --port "
                         f"{endpoint.port}` running there?)") from None
    except OSError as exc:
        raise SenseError(f"RPC worker {endpoint}: cannot connect ({exc.strerror or exc})") from None
    with sock:
        if not handshake:
            return
        try:
            sock.sendall(struct.pack("<BQ", RPC_CMD_HELLO, CONN_CAPS) + bytes(CONN_CAPS))
            answer = _read(sock, 8 + 4 + CONN_CAPS)
        except TimeoutError:
            raise SenseError(f"RPC worker {endpoint}: accepted the connection but did not answer within "
                             f"{HANDSHAKE_TIMEOUT_S:.0f} s (a worker serves one client at a time: is another "
                             "program using it?)") from None
        except OSError as exc:
            raise SenseError(f"RPC worker {endpoint}: the connection failed during the handshake "
                             f"({exc.strerror or exc})") from None
    size, major, minor, patch = struct.unpack("<QBBB", answer[:11])
    if size != 4 + CONN_CAPS:
        raise SenseError(f"RPC worker {endpoint}: not a llama.cpp RPC worker (it answered HELLO with {size} bytes)")
    if major != PROTO_MAJOR or minor > PROTO_MINOR:
        raise SenseError(f"RPC worker {endpoint}: speaks RPC protocol {major}.{minor}.{patch}, this build "
                         f"{PROTO_MAJOR}.{PROTO_MINOR}: run the worker from the same llama.cpp build")


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("closed by the worker")
        data += chunk
    return data


# ---------------------------------------------------------------------- ggml's backend registry
@functools.cache
def ggml() -> ctypes.CDLL:
    """libggml (the backend registry) with the few entry points used here."""
    lib = shared_library("ggml")
    p, size_t = ctypes.c_void_p, ctypes.c_size_t
    for name, restype, argtypes in [
        ("ggml_backend_reg_by_name", p, [ctypes.c_char_p]),
        ("ggml_backend_reg_get_proc_address", p, [p, ctypes.c_char_p]),
        ("ggml_backend_reg_dev_count", size_t, [p]),
        ("ggml_backend_reg_dev_get", p, [p, size_t]),
        ("ggml_backend_dev_by_type", p, [ctypes.c_int]),
        ("ggml_backend_dev_count", size_t, []),
        ("ggml_backend_dev_get", p, [size_t]),
        ("ggml_backend_dev_type", ctypes.c_int, [p]),
        ("ggml_backend_dev_name", ctypes.c_char_p, [p]),
        ("ggml_backend_dev_memory", None, [p, ctypes.POINTER(size_t), ctypes.POINTER(size_t)]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


DEV_CPU, DEV_GPU, DEV_IGPU, DEV_ACCEL = 0, 1, 2, 3  # enum ggml_backend_dev_type


def rpc_entry(name: str, prototype):
    """An entry point of the RPC backend (`ggml_backend_rpc_add_server`, `..._start_server`) from the
    registry, typed by `prototype`; SenseError when this llama.cpp was built without it."""
    lib = ggml()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise SenseError("this llama.cpp build has no RPC backend: rebuild with `SENSE_REBUILD=1 scripts/setup` "
                         "(set-up builds with -DGGML_RPC=ON)")
    return prototype(address)


def device_memory(device: int) -> int:
    """The free memory a ggml device reports, in bytes (a worker's: what its machine offers)."""
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    ggml().ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
    return free.value or total.value


# ---------------------------------------------------------------------- the client side
@dataclass(frozen=True)
class RpcDevice:
    endpoint: Endpoint
    handle: int  # ggml_backend_dev_t, owned by the RPC backend for the life of the process
    free_bytes: int  # what the worker reports (its machine's memory, or its --mem)


_ADD_SERVER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
_added: set[Endpoint] = set()  # registered in this process: their connection may be held by a loaded model


def connect(endpoints: tuple[Endpoint, ...]) -> list[RpcDevice]:
    """Each worker checked, then registered with the RPC backend: its devices, in `endpoints`' order."""
    from . import rpc_loss

    add_server = rpc_entry("ggml_backend_rpc_add_server", _ADD_SERVER)
    lib = ggml()
    devices = []
    for endpoint in endpoints:
        # A worker serves one client at a time: one this process already holds answers no second
        # HELLO, so it is only checked to be listening.
        check_worker(endpoint, handshake=endpoint not in _added)
        rpc_loss.arm(endpoint)  # from here a lost worker is one line (or the server's 503), never an abort
        reg = add_server(str(endpoint).encode())
        if not reg:
            raise SenseError(f"RPC worker {endpoint}: offers no device")
        _added.add(endpoint)
        for i in range(lib.ggml_backend_reg_dev_count(reg)):
            handle = lib.ggml_backend_reg_dev_get(reg, i)
            devices.append(RpcDevice(endpoint, handle, device_memory(handle)))
    return devices


@dataclass(frozen=True)
class Placement:
    """Where a model's layers go: the first `local` on this machine's CPU, the rest over the workers'
    devices in `layers` order. llama.cpp counts the output layer as one more layer (n_layer + 1 in
    all), so an 'all on the workers' placement leaves the CPU the token embeddings only."""

    devices: tuple[RpcDevice, ...]
    local: int  # layers kept on this machine
    layers: tuple[int, ...]  # [n_devices] layers on each worker device

    @property
    def n_gpu_layers(self) -> int:
        return sum(self.layers)

    def describe(self) -> str:
        """'layers: 11 here, 10 on 127.0.0.1:50052, 10 on 127.0.0.1:50053'"""
        return "layers: " + ", ".join([f"{self.local} here"] + [f"{n} on {d.endpoint}" for d, n in
                                                                 zip(self.devices, self.layers)])

    def apply(self, mparams) -> "ModelDevices":
        """Set llama_model_params' devices, n_gpu_layers and tensor_split; the arrays it points to
        live in the returned object, which must be kept until the model is loaded."""
        held = ModelDevices(self)
        mparams.devices = ctypes.addressof(held.devices)
        mparams.n_gpu_layers = self.n_gpu_layers
        mparams.split_mode = llama_cpp.LLAMA_SPLIT_MODE_LAYER
        mparams.tensor_split = held.split
        return held


class ModelDevices:
    """The C arrays a Placement gives llama.cpp: devices (NULL-terminated) and the layer split."""

    def __init__(self, placement: Placement):
        handles = [d.handle for d in placement.devices]
        self.devices = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)
        split = list(placement.layers) + [0.0] * (llama_cpp.llama_max_devices() - len(placement.layers))
        self.split = (ctypes.c_float * len(split))(*split)


def place(n_layer: int, devices: list[RpcDevice], local_bytes: int, gpu_layers: int = 0) -> Placement:
    """Split n_layer + 1 layers (the output layer last) between this machine and the worker devices.

    gpu_layers > 0 puts that many on the workers, -1 (or more than there are) all of them, 0 splits by
    memory: each side's share of the layers is its share of the memory reported (this machine's CPU
    device, each worker's device). The workers' layers are then split between them by memory too, as
    llama.cpp's own default split does, the rounding keeping every device at least one layer."""
    units = n_layer + 1
    if not devices:
        raise SenseError("no RPC worker devices to place layers on")
    memory = [max(1, d.free_bytes) for d in devices]
    if gpu_layers < 0 or gpu_layers >= units:
        remote = units
    elif gpu_layers > 0:
        remote = gpu_layers
    else:
        remote = round(units * sum(memory) / (sum(memory) + max(1, local_bytes)))
    remote = min(units, max(len(devices), remote))
    layers = _apportion(remote, memory)
    return Placement(tuple(devices), units - remote, tuple(layers))


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, largest remainders first, each at least 1."""
    exact = [total * w / sum(weights) for w in weights]
    counts = [max(1, int(x)) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(counts) < total:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > total:
        j = max(range(len(counts)), key=lambda k: counts[k])
        counts[j] -= 1
    return counts


def local_memory() -> int:
    """The memory this machine's CPU device reports (llama.cpp: all physical memory counts as free)."""
    return device_memory(ggml().ggml_backend_dev_by_type(DEV_CPU))


def place_on_workers(endpoints, n_layer: int, gpu_layers: int = 0) -> Placement:
    """The placement of a model of n_layer blocks on these workers (checked and registered first)."""
    return place(n_layer, connect(parse_endpoints(endpoints)), local_memory(), gpu_layers)
