"""`sense-local` command line: thin subcommands over the library."""
from __future__ import annotations

import argparse
import os
import sys

from .cli_args import (THREADS_HELP, add_cache_ram_arg, add_generation_args, add_grounding_args, add_key_layer_arg,
                       add_model_args)
from .cli_curve import cmd_curve
from .cli_generate import cmd_ask, cmd_bench, cmd_chat, cmd_generate
from .cli_history import cmd_history
from .cli_index import cmd_index
from .cli_models import cmd_info, cmd_models
from .cli_serve import cmd_rpc_worker, cmd_serve
from .errors import SenseError

DEFAULT_STORE_HELP = "store directory (default: $SENSE_HOME/stores/default)"


def build_parser() -> argparse.ArgumentParser:
    """The table of subcommands: each one's flags (shared groups from cli_args) and its handler."""
    from .datastore.extract import MAX_FILE_BYTES
    from .datastore.indexer import COMMIT_EVERY
    from .datastore.store_writer import DEFAULT_DTYPE, DTYPES
    from .rpc import DEFAULT_PORT as RPC_PORT
    from .server import LOOPBACK
    from .server.jobs import DEFAULT_QUEUE

    parser = argparse.ArgumentParser(prog="sense-local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print GGUF model facts")
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="GGUF path or registry name")
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("models", help="list registry models and the GGUF files other local tools keep")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("generate", help="generate a reply to one prompt ('-' reads stdin)")
    p.add_argument("prompt")
    add_model_args(p)
    p.add_argument("--store", help="document store for retrieval methods (sense, rest)")
    add_generation_args(p)
    p.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    p.add_argument("--predict", metavar="FILE", help="text the reply will mostly repeat (e.g. the file being edited): "
                   "drafted from, losslessly (OpenAI's Predicted Outputs; '-' reads stdin)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the text and statistics")
    p.add_argument("--events", action="store_true", help="with --json: include per-token events")
    p.add_argument("--stats", action="store_true", help="print statistics to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ask", help="answer a question from your indexed documents, citing its sources")
    p.add_argument("question", help="the question ('-' reads stdin)")
    add_model_args(p)
    p.add_argument("--store", help=DEFAULT_STORE_HELP)
    add_generation_args(p)
    add_grounding_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object with the answer and its sources")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="chat with the model (TUI; --plain for a line-based loop)")
    add_model_args(p)
    p.add_argument("--store", help="document store for retrieval methods (default: the default store, if indexed)")
    add_generation_args(p, chat=True)
    p.add_argument("--plain", action="store_true", help="line-based chat instead of the TUI")
    add_cache_ram_arg(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="serve the model over OpenAI's HTTP API (/v1: chat completions, completions, "
                       "models) and Ollama's (/api: chat, generate, tags, show), on one port")
    add_model_args(p)
    p.add_argument("--host", default=LOOPBACK, help=f"address to listen on (default {LOOPBACK}: this machine only)")
    p.add_argument("--port", type=int, default=8080,
                   help="port for both APIs (default 8080; 11434 is where Ollama clients look by default)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $SENSE_API_KEY, else none)")
    p.add_argument("--store", help="ground chat answers in this document store and return their sources")
    add_generation_args(p, server=True)
    add_grounding_args(p)
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE,
                   help=f"requests that may wait for the model (default {DEFAULT_QUEUE}; more get 503)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a Host name requests may use besides the bound address (repeatable; e.g. this "
                        "machine's LAN name); others get 403 (browser DNS-rebinding guard)")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (e.g. http://localhost:3000) whose pages may call the API from a "
                        "browser (repeatable); other origins get 403")
    p.add_argument("--strict-model", action="store_true",
                   help="answer 404 to requests naming another model (default: the loaded model answers them)")
    p.add_argument("--embedding-model", metavar="M",
                   help="the GGUF embedding model /v1/embeddings loads on its first request (a registry name, "
                        "path or found model; default: the registry's embedding model, all-MiniLM-L6-v2)")
    add_cache_ram_arg(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("index", help="index documents (files or folders) into a store for retrieval")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--store", help=DEFAULT_STORE_HELP)
    p.add_argument("--verify", action="store_true", help="check every store file against the manifest's checksums")
    p.add_argument("--repair", action="store_true", help="rebuild a damaged store from its documents")
    add_model_args(p)
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                   help=f"vector type in the index (default {DEFAULT_DTYPE}: same recall as f32, measured)")
    add_key_layer_arg(p, "a new store's keys")
    max_file_mb = MAX_FILE_BYTES // 2**20
    p.add_argument("--max-file-mb", type=float, default=max_file_mb,
                   help=f"skip files larger than this (default {max_file_mb})")
    p.add_argument("--commit-every", type=float, default=COMMIT_EVERY, metavar="SECONDS",
                   help=f"make progress durable this often (default {COMMIT_EVERY:g} s; a crash loses at most "
                        "this much)")
    p.add_argument("--wait", action="store_true",
                   help="if another process is indexing into the store, wait for it (default: say so and exit)")
    p.add_argument("--finish-keys", action="store_true",
                   help="also read documents an interrupted run left searchable by words only, wherever they are "
                        "(default: only those under PATH)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (progress: JSON lines on stderr)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("history", help="show (or --clear) the reply histories SENSE drafts from: every model's "
                       "earlier replies, kept under the data folder")
    p.add_argument("--clear", action="store_true", help="delete every reply history")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("curve", help="show this machine's decode cost curve for a model (what a k-token decode "
                       "costs in one-token decodes; every draft is sized by it), or --measure it now")
    add_model_args(p)
    p.add_argument("--measure", action="store_true", help="measure it now at every size 1..32 and every fourth "
                   "to 64, and keep it (about a minute and a half for the default model on 2 cores)")
    p.add_argument("--if-missing", action="store_true",
                   help="measure only where no measured curve is kept for this model, thread count and llama.cpp "
                   "(or one measured before it went to 64)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors and the measuring line")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curve)

    p = sub.add_parser("rpc-worker", help="hold layers of a model for another machine's --rpc (llama.cpp's RPC "
                       "server; no authentication: never on an open network)")
    p.add_argument("--host", default=LOOPBACK,
                   help=f"IPv4 address to listen on (default {LOOPBACK}: this machine only)")
    p.add_argument("--port", type=int, default=RPC_PORT)
    p.add_argument("--mem", type=int, default=None, metavar="MIB",
                   help="memory to report to clients, who split layers by it (default: this machine's memory)")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=cmd_rpc_worker)

    p = sub.add_parser("bench", help="benchmark methods against plain decoding and llama-server")
    add_model_args(p)
    p.add_argument("--suite", choices=["quick", "full"], default="quick")
    add_key_layer_arg(p, "SENSE's keys (and the benchmark store's)")
    p.add_argument("--methods", default=None, help="comma-separated (default: all registered + peers)")
    p.add_argument("--kinds", default=None, help="comma-separated task kinds to run (default: all)")
    p.add_argument("--peers", action="store_true",
                   help="also run llama.cpp's own llama-server (built once from the vendored llama.cpp, ~7 min) on every task: plain and with each draft-free --spec-type")
    p.add_argument("--reps", type=int, default=None,
                   help="interleaved repetitions per run, median taken (default: 1 for quick, 3 for full)")
    p.add_argument("--free-verification", action="store_true",
                   help="size drafts as if verifying k tokens cost as much as one (as on a GPU with a small "
                        "model): shows how far each drafter's drafts go; speed is then not this machine's best")
    p.add_argument("--one-runtime", action="store_true",
                   help="run the tasks in order through one runtime per method, as a server or the chat app keeps "
                        "one (what a method keeps across replies, the recycle table, carries on; llama-server's "
                        "n-gram pools likewise): each rep through runtimes of its own, the pooled peers once a task")
    p.add_argument("--theta-sweep", action="store_true",
                   help="run ar, sense and sense-soft at several theta values: the speed/quality trade-off")
    p.add_argument("--json", dest="json_file", help="write the results as JSON to this file")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "system", None):
        from .text_input import clean

        args.system = clean(args.system, "the system prompt")
    try:
        return args.func(args)
    except SenseError as exc:
        print(f"sense-local: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug or an environment we did not foresee: one line, never a traceback
        if os.environ.get("SENSE_DEBUG"):
            raise
        print(f"sense-local: internal error: {type(exc).__name__}: {exc} (SENSE_DEBUG=1 shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
