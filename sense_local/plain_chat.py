"""A line-based terminal chat (`sense-local chat --plain`, or when stdin is not a terminal).

Lines starting with `/` are commands, never sent to the model: /quit (or /exit), /new, /help.
A closed or exhausted stdin ends the chat cleanly.
"""
from __future__ import annotations

import sys

from .conversation import Conversation
from .errors import SenseError
from .line_output import print_sources, stream
from .text_input import read_line

HELP = "commands: /quit (or /exit, Ctrl-D) ends the chat, /new starts a new conversation, /help shows this"


def run_plain_chat(conversation: Conversation) -> int:
    messages: list[dict] = []
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if interactive:
        print(f"sense-local chat — {conversation.model_path.name}, method {conversation.config.options.method}. "
              "/help for commands, Ctrl-D quits.", file=sys.stderr)
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
                messages = []
                print("(new conversation)", file=sys.stderr)
            elif command == "/help":
                print(HELP, file=sys.stderr)
            else:
                print(f"sense-local: unknown command {command}; {HELP}", file=sys.stderr)
            continue
        try:
            reply = stream(conversation.reply([*messages, {"role": "user", "content": text}]))
        except SenseError as exc:
            print(f"sense-local: {exc}", file=sys.stderr)
            continue
        sys.stdout.write("\n")
        del messages[: reply.prepared.dropped]  # the turns that no longer fit are gone for good
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.finished.text}]
        print_sources(reply.prepared.sources)
        print(f"[{reply.finished.summary()}]", file=sys.stderr)
