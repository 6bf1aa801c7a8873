"""The subcommands that serve: `serve` (OpenAI's and Ollama's HTTP APIs) and `rpc-worker` (a model's
layers for another machine's --rpc)."""
from __future__ import annotations

import os

from .cli_config import conversation_config
from .errors import SenseError


def cmd_serve(args) -> int:
    from .server import serve

    if not 0 < args.port < 65536:
        raise SenseError(f"--port must be from 1 to 65535 (got {args.port})")
    from .reply_history import owner_for_key

    api_key = args.api_key or os.environ.get("SENSE_API_KEY") or None
    config = conversation_config(args, store=args.store, ranker=args.ranker, passages=args.passages,
                                 budget=args.budget, gate=not args.always_ground, history_owner=owner_for_key(api_key))
    return serve(config, host=args.host, port=args.port, api_key=api_key, queue_size=args.queue,
                 strict_model=args.strict_model, fixed_seed=args.seed is not None,
                 allow_hosts=tuple(args.allow_host), cors=tuple(args.cors), embedding_model=args.embedding_model)


def cmd_rpc_worker(args) -> int:
    from .rpc_worker import run_worker

    return run_worker(args.host, args.port, mem_mib=args.mem, threads=args.threads)
