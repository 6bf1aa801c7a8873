"""A line-based terminal chat (`sense-local chat --plain`, or when stdin is not a terminal).

Lines starting with `/` are commands, never sent to the model: /quit (or /exit), /new, /help.
A closed or exhausted stdin ends the chat cleanly.
"""
from __future__ import annotations

import sys

from .errors import SenseError
from .generation import GenerationOptions, make_decoder, open_store
from .grounding.chat import GroundedChat
from .text_input import read_line

HELP = "commands: /quit (or /exit, Ctrl-D) ends the chat, /new starts a new conversation, /help shows this"


def run_plain_chat(args, engine) -> int:
    options = GenerationOptions(args.method, args.max_tokens, args.temperature, args.seed, args.theta)
    store = open_store(engine, args.store)
    decoder = make_decoder(engine, options, store=store)
    grounded = GroundedChat(engine, store)  # with no store: plain chat
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        print(f"sense-local chat — {engine.path.name}, method {options.method}. /help for commands, Ctrl-D quits.",
              file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", flush=True, file=sys.stderr)
        line = read_line()
        if line is None:
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command = text.split()[0].lower()
            if command in ("/quit", "/exit"):
                return 0
            if command == "/new":
                messages = list(system)
                print("(new conversation)", file=sys.stderr)
            elif command == "/help":
                print(HELP, file=sys.stderr)
            else:
                print(f"sense-local: unknown command {command}; {HELP}", file=sys.stderr)
            continue
        try:
            turn = grounded.prepare(messages, text, reserve=min(options.max_tokens, engine.n_ctx // 4))
        except SenseError as exc:
            print(f"sense-local: {exc}", file=sys.stderr)
            continue
        for note in turn.notes:
            print(f"note: {note}", file=sys.stderr)
        first = 1 if messages and messages[0]["role"] == "system" else 0
        del messages[first : first + turn.dropped]  # the turns that no longer fit are gone for good
        messages.append({"role": "user", "content": text})
        reply = []
        for ev in decoder.generate(turn.tokens, options.max_tokens):
            reply.append(ev.text)
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
        s = decoder.stats
        for source in turn.sources:
            print(f"  {source.label()}: {source.snippet}")
        print(f"[{s.tokens} tokens, {s.tok_per_s:.1f} tok/s, tau {s.tau:.2f}]", file=sys.stderr)
        messages.append({"role": "assistant", "content": "".join(reply)})
