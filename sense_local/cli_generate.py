"""The subcommands that decode: `generate` (one prompt), `ask` (one question from the documents),
`chat` (the TUI or a line loop) and `bench` (every method against plain decoding)."""
from __future__ import annotations

import json
import sys

from .cli_config import conversation_config
from .errors import SenseError


def cmd_generate(args) -> int:
    from .conversation import Conversation
    from .line_output import stream
    from .text_input import argument, read_file

    config = conversation_config(args, store=args.store, grounded=False, one_shot=True)  # the store feeds retrieval drafters only
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
    from .paths import default_store
    from .text_input import argument

    config = conversation_config(args, store=args.store or str(default_store()), ranker=args.ranker,
                                 passages=args.passages, budget=args.budget, gate=not args.always_ground, one_shot=True)
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
    from .paths import default_store

    store = args.store
    if store is None and (default_store() / "manifest.json").exists():
        store = str(default_store())
    config = conversation_config(args, store=store)
    if args.plain or sys.stdin is None or not sys.stdin.isatty():
        from .conversation import Conversation
        from .plain_chat import run_plain_chat

        return run_plain_chat(Conversation.open(config))
    from tui.app import run_app  # the one place the library starts the TUI

    return run_app(config)


def cmd_bench(args) -> int:
    from .bench.runner import run_bench_cli

    return run_bench_cli(args)
