"""`sense-local` command line: thin subcommands over the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import SenseError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="GGUF path or registry name (default: $SENSE_MODEL or the default model)")
    p.add_argument("--ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, up to 8)")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers to offload to Metal/CUDA (-1: all)")


def load_engine(args):
    from .engine import Engine
    from .registry import resolve_model

    path = resolve_model(args.model)
    return Engine(path, n_ctx=args.ctx, n_threads=args.threads, n_gpu_layers=args.gpu_layers)


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
    from .generation import GenerationOptions, make_decoder, open_store, prompt_tokens
    from .text_input import argument

    options = GenerationOptions(args.method, args.max_tokens, args.temperature, args.seed, args.theta)
    prompt = argument(args.prompt, "the prompt")
    engine = load_engine(args)
    tokens = prompt_tokens(engine, prompt, raw=args.raw, system=args.system)
    decoder = make_decoder(engine, options, store=open_store(engine, args.store))
    events = []
    for ev in decoder.generate(tokens, options.max_tokens):
        if args.json:
            events.append(ev)
        else:
            sys.stdout.write(ev.text)
            sys.stdout.flush()
    stats = decoder.stats
    if args.json:
        doc = {
            "text": "".join(e.text for e in events),
            "soft_accepted": stats.soft_accepted,
            "tokens": stats.tokens,
            "forwards": stats.forwards,
            "tau": round(stats.tau, 4),
            "tok_per_s": round(stats.tok_per_s, 2),
            "method": stats.method,
            "drafted": stats.drafted,
            "accepted": stats.accepted,
            "stop_reason": stats.stop_reason,
        }
        if args.events:
            doc["events"] = [
                {"token": e.token, "text": e.text, "source": e.source, "soft": e.soft} for e in events
            ]
        print(json.dumps(doc, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        if args.stats:
            print(
                f"[{stats.method}] {stats.tokens} tokens, {stats.forwards} forwards, tau {stats.tau:.2f}, "
                f"{stats.tok_per_s:.1f} tok/s, accepted {stats.accepted}/{stats.drafted}",
                file=sys.stderr,
            )
    return 0


def cmd_ask(args) -> int:
    """Answer one question from the indexed documents, with sources."""
    from .generation import GenerationOptions, make_decoder, open_store
    from .grounding.chat import GroundedChat

    from .text_input import argument

    options = GenerationOptions(args.method, args.max_tokens, args.temperature, args.seed, args.theta)
    question = argument(args.question, "the question")
    if not question.strip():
        raise SenseError("empty question: nothing to ask")
    engine = load_engine(args)
    store = open_store(engine, args.store or default_store())
    grounded = GroundedChat(engine, store, ranker=args.ranker, passages=args.passages, budget=args.budget)
    system = [{"role": "system", "content": args.system}] if args.system else []
    turn = grounded.prepare(system, question, reserve=min(options.max_tokens, engine.n_ctx // 4))
    if not args.json:
        for note in turn.notes:
            print(f"note: {note}", file=sys.stderr)
    decoder = make_decoder(engine, options, store=store)
    parts = []
    for ev in decoder.generate(turn.tokens, options.max_tokens):
        parts.append(ev.text)
        if not args.json:
            sys.stdout.write(ev.text)
            sys.stdout.flush()
    stats = decoder.stats
    if args.json:
        print(json.dumps({
            "question": question, "answer": "".join(parts).strip(),
            "sources": [s.to_dict() for s in turn.sources], "notes": turn.notes, **stats.to_dict(),
        }, ensure_ascii=False))
        return 0
    sys.stdout.write("\n")
    if turn.sources:
        print("\nSources:")
        for source in turn.sources:
            print(f"  {source.label()}: {source.snippet}")
    return 0


def cmd_chat(args) -> int:
    if args.plain or sys.stdin is None or not sys.stdin.isatty():
        from .plain_chat import run_plain_chat

        return run_plain_chat(args, load_engine(args))
    from tui.app import run_app

    return run_app(args)


def default_store() -> str:
    from .paths import data_home

    return str(data_home() / "stores" / "default")


def cmd_index(args) -> int:
    from .datastore import index_paths
    from .datastore.extract import MAX_FILE_BYTES
    from .datastore.indexer import repair_store, verify_store

    store_dir = args.store or default_store()
    if args.verify:
        if args.paths:
            raise SenseError("--verify takes no paths: it checks the store (--store DIR)")
        result = verify_store(Path(store_dir))
        print(json.dumps(result) if args.json else
              f"{store_dir}: ok ({result['documents']} documents, {result['tokens']} tokens, {result['vectors']} vectors; "
              f"every file matches the manifest)")
        return 0
    if not args.paths and not args.repair:
        raise SenseError("index: give the files or folders to index (or --verify, --repair)")
    engine = load_engine(args)
    bar = None

    def progress(done: int, total: int, path: str) -> None:
        nonlocal bar
        if args.json:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True, file=sys.stderr,
                       desc="indexing", disable=None)
        bar.update(done - bar.n)
        if path:
            bar.set_postfix_str(os.path.basename(path)[-30:], refresh=False)

    limit = int(args.max_file_mb * 1024 * 1024) if args.max_file_mb else MAX_FILE_BYTES
    if args.repair:
        if args.paths:
            raise SenseError("--repair takes no paths: it rebuilds the store's own documents (--store DIR)")
        report = repair_store(engine, store_dir, progress=progress, wait=args.wait)
    else:
        report = index_paths(engine, store_dir, args.paths, progress=progress,
                             max_file_bytes=limit, dtype=args.dtype, commit_every=args.commit_every, wait=args.wait)
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
    return 0


def cmd_bench(args) -> int:
    from .bench.runner import run_bench_cli

    return run_bench_cli(args)


def build_parser() -> argparse.ArgumentParser:
    from .spec.methods import METHODS

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
    p.add_argument("--method", default="ar", help=f"decoding method: {', '.join(METHODS)} (default ar)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--store", help="document store for retrieval methods (sense, rest)")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft (0..1; 1 = exact)")
    p.add_argument("--raw", action="store_true", help="no chat template: continue the text as is")
    p.add_argument("--json", action="store_true", help="print one JSON object with the text and statistics")
    p.add_argument("--events", action="store_true", help="with --json: include per-token events")
    p.add_argument("--stats", action="store_true", help="print statistics to stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("ask", help="answer a question from your indexed documents, citing its sources")
    p.add_argument("question", help="the question ('-' reads stdin)")
    _add_model_args(p)
    p.add_argument("--store", help="store directory (default: $SENSE_HOME/stores/default)")
    # sense: retrieved passages in the prompt are what its live context store drafts from (docqa-rag:
    # tau 1.65 / 1.15x vs pld's 1.48 / 1.09x in the quick suite)
    p.add_argument("--method", default="sense", help=f"decoding method: {', '.join(METHODS)} (default sense)")
    p.add_argument("--passages", type=int, default=3, help="passages retrieved into the prompt (default 3)")
    p.add_argument("--budget", type=int, default=1024, help="most prompt tokens spent on passages (default 1024)")
    p.add_argument("--ranker", choices=["bm25", "hidden", "fused"], default="fused",
                   help="passage ranking: lexical, the model's hidden states, or both fused (default)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft")
    p.add_argument("--json", action="store_true", help="print one JSON object with the answer and its sources")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", help="chat with the model (TUI; --plain for a line-based loop)")
    _add_model_args(p)
    p.add_argument("--method", default="pld")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system", help="system prompt")
    p.add_argument("--store", help="document store for retrieval methods (default: the default store, if indexed)")
    p.add_argument("--theta", type=float, default=None, help="soft-gate threshold for sense-soft")
    p.add_argument("--plain", action="store_true", help="line-based chat instead of the TUI")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("index", help="index documents (files or folders) into a store for retrieval")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--store", help="store directory (default: $SENSE_HOME/stores/default)")
    p.add_argument("--verify", action="store_true", help="check every store file against the manifest's checksums")
    p.add_argument("--repair", action="store_true", help="rebuild a damaged store from its documents")
    _add_model_args(p)
    p.add_argument("--dtype", choices=["f32", "f16", "i8"], default="i8", help="vector type in the index (default i8: same recall as f32, measured)")
    p.add_argument("--max-file-mb", type=float, default=50, help="skip files larger than this (default 50)")
    p.add_argument("--commit-every", type=float, default=20.0, metavar="SECONDS",
                   help="make progress durable this often (default 20 s; a crash loses at most this much)")
    p.add_argument("--wait", action="store_true",
                   help="if another process is indexing into the store, wait for it (default: say so and exit)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("bench", help="benchmark methods against plain decoding and llama-cpp-python")
    _add_model_args(p)
    p.add_argument("--suite", choices=["quick", "full"], default="quick")
    p.add_argument("--methods", default=None, help="comma-separated (default: all registered + peers)")
    p.add_argument("--kinds", default=None, help="comma-separated task kinds to run (default: all)")
    p.add_argument("--peers", action="store_true",
                   help="also run llama-cpp-python's create_completion and its prompt lookup on every task")
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
