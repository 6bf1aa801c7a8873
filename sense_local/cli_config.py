"""What a subcommand's arguments describe: the conversation's configuration, the engine, the RPC workers."""
from __future__ import annotations


def conversation_config(args, **extra):
    """The ConversationConfig a subcommand's arguments describe."""
    from .conversation import ConversationConfig
    from .generation import GenerationOptions

    options = GenerationOptions(method=args.method, max_tokens=args.max_tokens, temperature=args.temperature,
                                seed=args.seed or 0, theta=args.theta)
    if getattr(args, "cache_ram", None) is not None:
        extra["cache_ram_mib"] = args.cache_ram
    if getattr(args, "cache_disk", None) is not None:
        extra["cache_disk_mib"] = args.cache_disk
    if getattr(args, "no_history", False):
        extra["history"] = False
    return ConversationConfig(model=args.model, n_ctx=args.ctx, threads=args.threads, gpu_layers=args.gpu_layers,
                              rpc=rpc_workers(args), options=options, system=args.system or "", **extra)


def rpc_workers(args) -> tuple[str, ...]:
    """--rpc's HOST:PORT entries as given (checked where the model loads: rpc.parse_endpoints)."""
    return tuple(args.rpc.split(",")) if getattr(args, "rpc", "") else ()


def load_engine(args):
    from .engine import Engine
    from .registry import resolve_model

    path = resolve_model(args.model)
    return Engine(path, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.gpu_layers,
                  key_layer=getattr(args, "key_layer", "default"), rpc=rpc_workers(args))
