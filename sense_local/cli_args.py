"""The flags several `sense-local` subcommands share. Every default is read from the module that
defines it (GenerationOptions, ConversationConfig, the grounding and datastore constants), so the
command line cannot drift from the library; the subcommands' own flags are in cli.build_parser."""
from __future__ import annotations

import argparse

THREADS_HELP = "CPU threads (default: all cores, up to 8)"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model, --ctx, --threads, --gpu-layers, --rpc: which model loads, and where."""
    from .conversation import ConversationConfig

    config = ConversationConfig()
    p.add_argument("--model", help="GGUF path or registry name (default: $SENSE_MODEL or the default model)")
    p.add_argument("--ctx", type=int, default=config.n_ctx, help=f"context size in tokens (default {config.n_ctx})")
    p.add_argument("--threads", type=int, default=config.threads, help=THREADS_HELP)
    p.add_argument("--gpu-layers", type=int, default=config.gpu_layers,
                   help="layers to offload to Metal/CUDA (-1: all); with --rpc, to the workers (default: split by "
                        "the memory each machine reports)")
    p.add_argument("--rpc", metavar="HOST:PORT[,...]", default="",
                   help="llama.cpp RPC workers (`sense-local rpc-worker`) to hold some of the model's layers: for a "
                        "model larger than this machine's memory; every decode then crosses the network")


def add_generation_args(p: argparse.ArgumentParser, *, chat: bool = False, server: bool = False) -> None:
    """--method, --max-tokens, --temperature, --seed, --system, --theta: how replies are decoded, with
    GenerationOptions' defaults. A chat's replies (`chat`, and `server`) are DEFAULT_CHAT_MAX_TOKENS
    long; a server's flags are what requests that name no value get, and with no --seed each request
    draws its own."""
    from .generation import DEFAULT_CHAT_MAX_TOKENS, GenerationOptions
    from .speculative.methods import DEFAULT_METHOD, METHODS

    options = GenerationOptions()
    method_help = f"decoding method: {', '.join(METHODS)} (default {DEFAULT_METHOD}"
    p.add_argument("--method", default=options.method,
                   help=method_help + ("; a request may name another in a `method` field)" if server else ")"))
    p.add_argument("--max-tokens", type=int, default=DEFAULT_CHAT_MAX_TOKENS if chat or server else options.max_tokens,
                   help="reply length when a request gives no max_tokens" if server else None)
    p.add_argument("--temperature", type=float, default=options.temperature,
                   help="when a request gives none" if server else None)
    if server:
        p.add_argument("--seed", type=int, default=None,
                       help="seed for requests that give none (default: a new random seed per request)")
    else:
        p.add_argument("--seed", type=int, default=options.seed)
    p.add_argument("--system", help="system prompt for conversations that bring none" if server else "system prompt")
    p.add_argument("--theta", type=float, default=options.theta,
                   help="soft-gate threshold for sense-soft (0..1; 1 = exact)")
    p.add_argument("--no-history", action="store_true",
                   help="keep no replies in the model's reply history (SENSE drafts from it; `sense-local history`)")


def add_grounding_args(p: argparse.ArgumentParser) -> None:
    """--passages, --budget, --ranker, --always-ground: how questions are grounded in the store."""
    from .grounding.chat import DEFAULT_PASSAGES
    from .grounding.prompt import DEFAULT_BUDGET
    from .grounding.retrieve import DEFAULT_RANKER, RANKERS

    p.add_argument("--passages", type=int, default=DEFAULT_PASSAGES,
                   help=f"passages retrieved into a grounded prompt (default {DEFAULT_PASSAGES})")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                   help=f"most prompt tokens spent on passages (default {DEFAULT_BUDGET})")
    p.add_argument("--ranker", choices=RANKERS, default=DEFAULT_RANKER,
                   help="passage ranking: lexical, the model's hidden states, or both fused "
                        f"(default {DEFAULT_RANKER})")
    p.add_argument("--always-ground", action="store_true",
                   help="put passages into the prompt even when few of the question's words occur in the documents "
                        "(a question in another language than the documents')")


def add_key_layer_arg(p: argparse.ArgumentParser, what: str) -> None:
    def key_layer(text: str):
        from .engine import parse_key_layer

        try:
            return parse_key_layer(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--key-layer", type=key_layer, default="default", metavar="BLOCK",
                   help=f"the block whose input states are {what}: a number, final (the output norm) or "
                        "default (chosen by measurement per model); a store made earlier keeps its own")


def add_cache_ram_arg(p: argparse.ArgumentParser) -> None:
    from .kv_disk import DEFAULT_MIB as DISK_MIB
    from .kv_slots import DEFAULT_MIB

    p.add_argument("--cache-disk", type=int, default=None, metavar="MIB",
                   help=f"disk for chat turns' evaluated prompts, so a conversation reopened in a later run resumes "
                        f"without a prefill (default {DISK_MIB}; 0: none)")

    p.add_argument("--cache-ram", type=int, default=None, metavar="MIB",
                   help=f"RAM for the evaluated prompts of conversations set aside by other requests, resumed "
                        f"without a prefill (default {DEFAULT_MIB}; 0: none)")
