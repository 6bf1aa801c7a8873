"""`sense-local serve`: the OpenAI-compatible HTTP API on the conversation runtime (see app.py)."""
from __future__ import annotations

import ipaddress
import sys

from ..conversation import Conversation, ConversationConfig
from .jobs import DEFAULT_QUEUE

LOOPBACK = "127.0.0.1"


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
          queue_size: int = DEFAULT_QUEUE) -> int:
    import uvicorn

    from .app import ServerState, build_app

    conversation = Conversation.open(config)
    model_id, aliases = model_names(config, conversation)
    state = ServerState(conversation, model_id=model_id, aliases=aliases, api_key=api_key, queue_size=queue_size)
    if not api_key and not _is_loopback(host):
        print(f"sense-local serve: warning: listening on {host} without --api-key: anyone who can reach this "
              "machine can use the model", file=sys.stderr)
    store = f", documents {config.store}" if config.store else ""
    print(f"sense-local serve: {model_id} (method {config.options.method}{store}) on http://{host}:{port}/v1",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(build_app(state), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    finally:
        state.queue.close()
        conversation.close()
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
