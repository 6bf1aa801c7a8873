"""`sense-local serve`: the OpenAI-compatible HTTP API on the conversation runtime (see app.py)."""
from __future__ import annotations

import errno
import ipaddress
import socket
import shlex
import sys

from ..conversation import Conversation, ConversationConfig
from ..errors import SenseError
from .jobs import DEFAULT_QUEUE

LOOPBACK = "127.0.0.1"
# What one connection may hold, set on purpose (README, "Slow and stuck clients"):
SEND_BUFFER = 16 * 1024  # bytes of a reply the kernel holds for a client that is not reading (Linux doubles it)
MAX_CONNECTIONS = 1000  # open connections and requests together; past it uvicorn answers 503 at once
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed this long after its last response


def model_names(config: ConversationConfig, conversation: Conversation) -> tuple[str, set[str]]:
    """The id /v1/models shows, and every name a request may use for the loaded model."""
    path = conversation.model_path
    model_id = path.stem
    names = {path.name, path.stem, str(path)}
    if config.model:
        names.add(config.model)
    from ..registry import load_registry

    registry = load_registry()
    for entry in registry.entries.values():
        if entry.path.name == path.name:
            model_id = entry.name
            names.add(entry.name)
    names |= {role for role, name in registry.roles.items() if name == model_id}
    return model_id, names


def serve(config: ConversationConfig, *, host: str = LOOPBACK, port: int = 8080, api_key: str | None = None,
          queue_size: int = DEFAULT_QUEUE, strict_model: bool = False, fixed_seed: bool = False,
          allow_hosts: tuple[str, ...] = (), cors: tuple[str, ...] = (), embedding_model: str | None = None) -> int:
    import uvicorn

    from ..embeddings import LazyEmbedder
    from ..speculative.cost import curve_source
    from .app import build_app
    from .guard import HostPolicy
    from .state import ServerState

    sock = bind(host, port)  # before the model loads: a busy port fails in a moment, not after it
    try:
        conversation = Conversation.open(config)
    except BaseException:
        sock.close()
        raise
    model_id, aliases = model_names(config, conversation)
    state = ServerState(conversation, model_id=model_id, aliases=aliases, api_key=api_key, queue_size=queue_size,
                        strict_model=strict_model, fixed_seed=fixed_seed, embedder=LazyEmbedder(embedding_model))
    if conversation.engine.placement is not None:
        _fail_requests_on_worker_loss(state)
    if not api_key and not _is_loopback(host):
        print(f"sense-local serve: warning: listening on {host} without --api-key: anyone who can reach this "
              "machine can use the model", file=sys.stderr)
    store = f", documents {config.store}" if config.store else ""
    if conversation.engine.placement is not None:
        store += f", {conversation.engine.placement.describe()}"
    if conversation.history_note:
        print(f"sense-local serve: {conversation.history_note}", file=sys.stderr)
    if config.options.method != "ar" and curve_source(conversation.engine) in ("prior", "learned"):
        given = (("model", config.model), ("threads", config.threads), ("gpu-layers", config.gpu_layers or None))
        flags = "".join(f" --{flag} {shlex.quote(str(value))}" for flag, value in given if value)
        print(f"sense-local serve: this machine's decode costs for {model_id} are not measured: drafts are sized "
              f"from a prior and learned as replies go (`sense-local curve{flags} --measure`, about a minute for a "
              "1.5B model on 2 cores, measures them once)", file=sys.stderr)
    print(f"sense-local serve: {model_id} (method {config.options.method}{store}) on http://{host}:{port}/v1",
          file=sys.stderr, flush=True)
    app = build_app(state, HostPolicy(host, allow_hosts, cors))
    try:
        _room_for_connections(MAX_CONNECTIONS)
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3, timeout_keep_alive=KEEP_ALIVE_S,
                                      limit_concurrency=MAX_CONNECTIONS)).run(sockets=[sock])
    finally:
        state.queue.close()
        state.embedder.close()
        conversation.close()
        sock.close()
    return 0


def _fail_requests_on_worker_loss(state) -> None:
    """A lost RPC worker takes the model with it (rpc_loss.py): the server stays up, says so once, and
    answers every request from then on with a 503 naming the worker."""
    from ..rpc_loss import on_loss

    def lost(what: str) -> None:
        message = f"the model is unavailable: {what}; restart sense-local serve once the worker is back"
        print(f"sense-local serve: error: {message}", file=sys.stderr, flush=True)
        state.queue.fail_all(message)

    on_loss(lost)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or SenseError saying why not (in use, no such address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SenseError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart right after a stop may rebind
        # accepted connections inherit it: a client that stops reading fills it soon (jobs.py then cancels its turn)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SenseError(f"port {port} on {host} is in use by another program (choose another with --port)") from None
        raise SenseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _room_for_connections(connections: int) -> None:
    """Raise the soft open-files limit (often 1024) toward the hard one, so that `connections` sockets
    fit beside the model's files before uvicorn's own limit answers 503."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
