"""`sense-local` command line: thin subcommands over the library."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .errors import SenseError

PASS_LINE_EVERY = 5.0  # seconds between the model pass's progress lines when no bar can be drawn


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF path or registry name (default: $SENSE_MODEL or the default model)")
    p.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, up to 8)")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers to offload to Metal/CUDA (-1: all); with "
                   "--rpc, to the workers (default: split by the memory each machine reports)")
    p.add_argument("--rpc", metavar="HOST:PORT[,...]", default="",
                   help="llama.cpp RPC workers (`sense-local rpc-worker`) to hold some of the model's layers: for a "
                        "model larger than this machine's memory; every decode then crosses the network")


def _add_key_layer_arg(p: argparse.ArgumentParser, what: str) -> None:
    def key_layer(text: str):
        from .engine import parse_key_layer

        try:
            return parse_key_layer(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--key-layer", type=key_layer, default="default", metavar="BLOCK",
                   help=f"the block whose input states are {what}: a number, final (the output norm) or "
                        "default (chosen by measurement per model); a store made earlier keeps its own")


def conversation_config(args, **extra):
    """The ConversationConfig a subcommand's arguments describe."""
    from .conversation import ConversationConfig
    from .generation import GenerationOptions

    options = GenerationOptions(method=args.method, max_tokens=args.max_tokens, temperature=args.temperature,
                                seed=args.seed or 0, theta=args.theta)
    if getattr(args, "cache_ram", None) is not None:
        extra["cache_ram_mib"] = args.cache_ram
    return ConversationConfig(model=args.model, n_ctx=args.ctx, threads=args.threads, gpu_layers=args.gpu_layers,
                              rpc=rpc_workers(args), options=options, system=args.system or "", **extra)


def rpc_workers(args) -> tuple[str, ...]:
    """--rpc's HOST:PORT entries as given (checked where the model loads: rpc.parse_endpoints)."""
    return tuple(args.rpc.split(",")) if getattr(args, "rpc", "") else ()


def _add_cache_ram_arg(p: argparse.ArgumentParser) -> None:
    from .kv_slots import DEFAULT_MIB

    p.add_argument("--cache-ram", type=int, default=None, metavar="MIB",
                   help=f"RAM for the evaluated prompts of conversations set aside by other requests, resumed "
                        f"without a prefill (default {DEFAULT_MIB}; 0: none)")


def load_engine(args):
    from .engine import Engine
    from .registry import resolve_model

    path = resolve_model(args.model)
    return Engine(path, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.gpu_layers,
                  key_layer=getattr(args, "key_layer", "default"), rpc=rpc_workers(args))


def cmd_info(args) -> int:
    from .model_info import read_model_info
    from .native import backends, system_info
    from .registry import resolve_model

    info = read_model_info(resolve_model(args.model_pos or args.model))
    system = system_info()
    if args.json:
        print(json.dumps({**info.to_dict(), "backends": backends(system), "llama_cpp_system_info": system}, indent=2))
        return 0
    rows = info.to_dict()
    template = rows.pop("chat_template")
    for key, value in rows.items():
        print(f"{key:>12}: {value}")
    print(f"{'template':>12}: {'yes (' + str(len(template)) + ' chars)' if template else 'none (ChatML fallback)'}")
    print(f"{'backend':>12}: {', '.join(backends(system))}")
    print(f"{'llama.cpp':>12}: {system}")
    return 0


def cmd_models(args) -> int:
    """Registry models (present or not) and the GGUF files other local tools keep."""
    from .model_discovery import discover
    from .model_info import read_model_info
    from .registry import load_registry

    registry = load_registry()
    rows = []
    for entry in registry.entries.values():
        roles = [role for role, name in registry.roles.items() if name == entry.name]
        row = {"name": entry.name, "source": "registry", "present": entry.present, "path": str(entry.path),
               "bytes": entry.path.stat().st_size if entry.present else entry.size, "license": entry.license,
               "roles": roles, "why": entry.why}
        rows.append(row)
    for found in discover():
        rows.append({"name": found.name, "source": found.tool, "present": True, "path": str(found.path),
                     "bytes": found.path.stat().st_size, "license": "", "roles": [], "why": ""})
    for row in rows:
        row["architecture"] = row["quantization"] = None
        if row["present"]:
            try:
                info = read_model_info(row["path"])
                row["architecture"], row["quantization"] = info.architecture, info.quantization
            except SenseError as exc:
                row["error"] = str(exc)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<44} {'source':<9} {'arch':<8} {'quant':<8} {'size':>9}  status")
    for row in rows:
        size = f"{row['bytes'] / 2**30:.2f} GiB" if row["bytes"] else "?"
        status = "ready" if row["present"] else "not fetched (models/fetch.py " + row["name"] + ")"
        if row.get("error"):
            status = "unreadable: " + row["error"]
        if row["roles"]:
            status += " [" + ", ".join(row["roles"]) + "]"
        print(f"{row['name']:<44} {row['source']:<9} {row['architecture'] or '-':<8} "
              f"{row['quantization'] or '-':<8} {size:>9}  {status}")
    return 0


def cmd_generate(args) -> int:
    from .conversation import Conversation
    from .line_output import stream
    from .text_input import argument, read_file

    config = conversation_config(args, store=args.store, grounded=False)  # the store feeds retrieval drafters only
    prompt = argument(args.prompt, "the prompt")
    if args.predict:
        if args.predict == "-" and args.prompt == "-":
            raise SenseError("the prompt and --predict cannot both read standard input")
        prediction = read_file(args.predict, "--predict")
        config = config.replace(options=config.options.replace(prediction=prediction))
    conversation = Conversation.open(config)
    turn = (conversation.complete(prompt) if args.raw else
            conversation.reply([{"role": "user", "content": prompt}]))
    reply = stream(turn, echo=not args.json, keep_events=args.json and args.events)
    stats = reply.finished.stats
    if args.json:
        doc = {"text": reply.finished.text, **stats.to_dict(), "finish_reason": reply.finished.finish_reason}
        if args.events:
            doc["events"] = [{"token": e.token, "text": e.text, "source": e.source, "soft": e.soft} for e in reply.events]
        print(json.dumps(doc, ensure_ascii=False))
        return 0
    sys.stdout.write("\n")
    if args.stats:
        print(f"[{reply.finished.summary()}]", file=sys.stderr)
    return 0


def cmd_ask(args) -> int:
    """Answer one question from the indexed documents, with sources."""
    from .conversation import Conversation
    from .line_output import print_sources, stream
    from .text_input import argument

    config = conversation_config(args, store=args.store or default_store(), ranker=args.ranker,
                                 passages=args.passages, budget=args.budget, gate=not args.always_ground)
    question = argument(args.question, "the question")
    if not question.strip():
        raise SenseError("empty question: nothing to ask")
    conversation = Conversation.open(config)
    reply = stream(conversation.reply([{"role": "user", "content": question}]), echo=not args.json, notes=not args.json)
    if args.json:
        print(json.dumps({
            "question": question, "answer": reply.finished.text.strip(),
            "sources": [s.to_dict() for s in reply.prepared.sources], "notes": reply.prepared.notes,
            **reply.finished.stats.to_dict(),
        }, ensure_ascii=False))
        return 0
    sys.stdout.write("\n")
    if reply.prepared.sources:
        print("\nSources:")
        print_sources(reply.prepared.sources)
    return 0


def cmd_chat(args) -> int:
    from .paths import default_store as default_store_dir

    store = args.store
    if store is None and (default_store_dir() / "manifest.json").exists():
        store = str(default_store_dir())
    config = conversation_config(args, store=store)
    if args.plain or sys.stdin is None or not sys.stdin.isatty():
        from .conversation import Conversation
        from .plain_chat import run_plain_chat

        return run_plain_chat(Conversation.open(config))
    from tui.app import run_app  # the one place the library starts the TUI

    return run_app(config)


def cmd_serve(args) -> int:
    from .server import serve

    if not 0 < args.port < 65536:
        raise SenseError(f"--port must be from 1 to 65535 (got {args.port})")
    config = conversation_config(args, store=args.store, ranker=args.ranker, passages=args.passages,
                                 budget=args.budget, gate=not args.always_ground)
    api_key = args.api_key or os.environ.get("SENSE_API_KEY") or None
    return serve(config, host=args.host, port=args.port, api_key=api_key, queue_size=args.queue,
                 strict_model=args.strict_model, fixed_seed=args.seed is not None,
                 allow_hosts=tuple(args.allow_host), cors=tuple(args.cors), embedding_model=args.embedding_model)


def default_store() -> str:
    from .paths import default_store

    return str(default_store())


def cmd_index(args) -> int:
    from .datastore import index_paths
    from .datastore.extract import MAX_FILE_BYTES
    from .datastore.indexer import repair_store, verify_store

    store_dir = args.store or default_store()
    if args.verify:
        if args.paths:
            raise SenseError("--verify takes no paths: it checks the store (--store DIR)")
        from .key_tap import layer_name

        result = verify_store(Path(store_dir))
        print(json.dumps(result) if args.json else
              f"{store_dir}: ok ({result['documents']} documents, {result['tokens']} tokens, {result['vectors']} vectors "
              f"keyed on {layer_name(result['key_layer'])}"
              + (f", {result['unkeyed']} by words only until the next index run" if result["unkeyed"] else "")
              + "; every file matches the manifest)")
        return 0
    if not args.paths and not args.repair:
        raise SenseError("index: give the files or folders to index (or --verify, --repair)")
    engine = load_engine(args)
    bar = None
    lines = PassLines(json_events=args.json) if args.json or not sys.stderr.isatty() else None

    def progress(done: int, total: int, path: str) -> None:
        nonlocal bar
        if lines is not None:  # not a terminal, or --json: a line (an event) every few seconds
            lines.update(done, total, path)
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                       desc="indexing", disable=None)
        bar.update(done - bar.n)
        if path:
            bar.set_postfix_str(os.path.basename(path)[-30:], refresh=False)

    def owed(documents: int, tokens: int, reading_now: bool) -> None:
        what = f"{documents} document{'s' * (documents > 1)} ({tokens:,} tokens) an earlier run left searchable by words only"
        if args.json:
            print(json.dumps({"event": "owed", "documents": documents, "tokens": tokens, "reading_now": reading_now}),
                  file=sys.stderr, flush=True)
        elif reading_now:
            print(f"{what}: the model reads them now", file=sys.stderr, flush=True)

    def searchable(n: int) -> None:
        if n and not args.json:
            print(f"{n} document{'s' * (n > 1)} searchable by words now (ask finds them); the model reads them next",
                  file=sys.stderr)

    limit = int(args.max_file_mb * 1024 * 1024) if args.max_file_mb else MAX_FILE_BYTES
    if args.repair:
        if args.paths:
            raise SenseError("--repair takes no paths: it rebuilds the store's own documents (--store DIR)")
        report = repair_store(engine, store_dir, progress=progress, wait=args.wait)
    else:
        report = index_paths(engine, store_dir, args.paths, progress=progress,
                             max_file_bytes=limit, dtype=args.dtype, commit_every=args.commit_every, wait=args.wait,
                             on_searchable=searchable, finish_keys=args.finish_keys, on_owed=owed)
    if bar is not None:
        bar.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    print(
        f"indexed {len(report.added)} new, {len(report.updated)} changed, {len(report.removed)} removed, "
        f"{report.unchanged} unchanged; {report.tokens} tokens in {report.seconds:.1f} s "
        f"({report.tok_per_s:.0f} tok/s); store: {report.store_vectors} vectors, {report.store_bytes / 1e6:.1f} MB"
    )
    for path, reason in report.skipped.items():
        print(f"  skipped {path}: {reason}")
    if report.owed:
        print(f"  {report.owed} document{'s' * (report.owed > 1)} outside these paths ({report.owed_tokens:,} tokens) "
              "an earlier run left searchable by words only: --finish-keys reads them now; otherwise an index of "
              "their folder or the chat app does")
    return 0


class PassLines:
    """The model pass's progress where no bar can be drawn (stderr not a terminal, or --json): a line
    (a JSON event with --json) at the start and every PASS_LINE_EVERY seconds, with an estimate."""

    def __init__(self, json_events: bool):
        self.json_events = json_events
        self.start: tuple[float, int] | None = None  # (time, tokens done) of the first report
        self.shown = -math.inf
        self.shown_done = -1

    def update(self, done: int, total: int, path: str) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = (now, done)
        elif done == self.shown_done or (now - self.shown < PASS_LINE_EVERY and done < total):
            return
        self.shown, self.shown_done = now, done
        t0, d0 = self.start
        left = (total - done) * (now - t0) / (done - d0) if done > d0 and now > t0 else None
        if self.json_events:
            event = {"event": "progress", "done": done, "total": total, "path": path,
                     "seconds_left": None if left is None else round(left)}
            print(json.dumps(event), file=sys.stderr, flush=True)
            return
        estimate = "" if left is None else f", about {left:.0f} s left"
        print(f"indexing: {done:,} / {total:,} tokens{estimate}", file=sys.stderr, flush=True)


def cmd_rpc_worker(args) -> int:
    from .rpc_worker import run_worker

    return run_worker(args.host, args.port, mem_mib=args.mem, threads=args.threads)


def cmd_bench(args) -> int:
    from .bench.runner import run_bench_cli

    return run_bench_cli(args)


def build_parser() -> argparse.ArgumentParser:
    from .speculative.methods import DEFAULT_METHOD, METHODS

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
    _add_model_args(p)
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"decoding method: {', '.join(METHODS)} (default {DEFAULT_METHOD})")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--store", help="document store for retrieval methods (sense, rest)")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft (0..1; 1 = exact)")
    p.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    p.add_argument("--predict", metavar="FILE", help="text the reply will mostly repeat (e.g. the file being edited): "
                   "drafted from, losslessly (OpenAI's Predicted Outputs; '-' reads stdin)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the text and statistics")
    p.add_argument("--events", action="store_true", help="with --json: include per-token events")
    p.add_argument("--stats", action="store_true", help="print statistics to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ask", help="answer a question from your indexed documents, citing its sources")
    p.add_argument("question", help="the question ('-' reads stdin)")
    _add_model_args(p)
    p.add_argument("--store", help="store directory (default: $SENSE_HOME/stores/default)")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"decoding method: {', '.join(METHODS)} (default {DEFAULT_METHOD})")
    p.add_argument("--passages", type=int, default=3, help="passages retrieved into the prompt (default 3)")
    p.add_argument("--budget", type=int, default=1024, help="most prompt tokens spent on passages (default 1024)")
    p.add_argument("--ranker", choices=["bm25", "hidden", "fused"], default="fused",
                   help="passage ranking: lexical, the model's hidden states, or both fused (default)")
    p.add_argument("--always-ground", action="store_true",
                   help="put passages into the prompt even when few of the question's words occur in the documents "
                        "(a question in another language than the documents')")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft")
    p.add_argument("--json", action="store_true", help="print one JSON object with the answer and its sources")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="chat with the model (TUI; --plain for a line-based loop)")
    _add_model_args(p)
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"decoding method: {', '.join(METHODS)} (default {DEFAULT_METHOD})")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--store", help="document store for retrieval methods (default: the default store, if indexed)")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft")
    p.add_argument("--plain", action="store_true", help="line-based chat instead of the TUI")
    _add_cache_ram_arg(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", help="serve the model over OpenAI's HTTP API (/v1: chat completions, completions, "
                       "models) and Ollama's (/api: chat, generate, tags, show), on one port")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080,
                   help="port for both APIs (default 8080; 11434 is where Ollama clients look by default)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $SENSE_API_KEY, else none)")
    p.add_argument("--store", help="ground chat answers in this document store and return their sources")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"decoding method: {', '.join(METHODS)} (default {DEFAULT_METHOD}; "
                   "a request may name another in a `method` field)")
    p.add_argument("--max-tokens", type=int, default=512, help="reply length when a request gives no max_tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="when a request gives none")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for requests that give none (default: a new random seed per request)")
    p.add_argument("--system", help="system prompt for conversations that bring none")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft")
    p.add_argument("--passages", type=int, default=3, help="passages retrieved into a grounded prompt (default 3)")
    p.add_argument("--budget", type=int, default=1024, help="most prompt tokens spent on passages (default 1024)")
    p.add_argument("--ranker", choices=["bm25", "hidden", "fused"], default="fused")
    p.add_argument("--always-ground", action="store_true",
                   help="ground every question, even ones few of whose words occur in the documents")
    p.add_argument("--queue", type=int, default=64, help="requests that may wait for the model (default 64; more get 503)")
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
    _add_cache_ram_arg(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("index", help="index documents (files or folders) into a store for retrieval")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--store", help="store directory (default: $SENSE_HOME/stores/default)")
    p.add_argument("--verify", action="store_true", help="check every store file against the manifest's checksums")
    p.add_argument("--repair", action="store_true", help="rebuild a damaged store from its documents")
    _add_model_args(p)
    p.add_argument("--dtype", choices=["f32", "f16", "i8"], default="i8", help="vector type in the index (default i8: same recall as f32, measured)")
    _add_key_layer_arg(p, "a new store's keys")
    p.add_argument("--max-file-mb", type=float, default=50, help="skip files larger than this (default 50)")
    p.add_argument("--commit-every", type=float, default=20.0, metavar="SECONDS",
                   help="make progress durable this often (default 20 s; a crash loses at most this much)")
    p.add_argument("--wait", action="store_true",
                   help="if another process is indexing into the store, wait for it (default: say so and exit)")
    p.add_argument("--finish-keys", action="store_true",
                   help="also read documents an interrupted run left searchable by words only, wherever they are "
                        "(default: only those under PATH)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (progress: JSON lines on stderr)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("rpc-worker", help="hold layers of a model for another machine's --rpc (llama.cpp's RPC "
                       "server; no authentication: never on an open network)")
    p.add_argument("--host", default="127.0.0.1",
                   help="IPv4 address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=50052)
    p.add_argument("--mem", type=int, default=None, metavar="MIB",
                   help="memory to report to clients, who split layers by it (default: this machine's memory)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, up to 8)")
    p.set_defaults(func=cmd_rpc_worker)

    p = sub.add_parser("bench", help="benchmark methods against plain decoding and llama-server")
    _add_model_args(p)
    p.add_argument("--suite", choices=["quick", "full"], default="quick")
    _add_key_layer_arg(p, "SENSE's keys (and the benchmark store's)")
    p.add_argument("--methods", default=None, help="comma-separated (default: all registered + peers)")
    p.add_argument("--kinds", default=None, help="comma-separated task kinds to run (default: all)")
    p.add_argument("--peers", action="store_true",
                   help="also run llama.cpp's own llama-server (built once from the vendored llama.cpp, ~7 min) on every task: plain and with each draft-free --spec-type")
    p.add_argument("--reps", type=int, default=None,
                   help="interleaved repetitions per run, median taken (default: 1 for quick, 3 for full)")
    p.add_argument("--free-verification", action="store_true",
                   help="size drafts as if verifying k tokens cost as much as one (as on a GPU with a small "
                        "model): shows how far each drafter's drafts go; speed is then not this machine's best")
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
