"""Placeholder for the Textual chat app: runs the plain terminal chat until the TUI lands."""
from __future__ import annotations


def run_app(args) -> int:
    from sense_local.cli import load_engine
    from sense_local.plain_chat import run_plain_chat

    return run_plain_chat(args, load_engine(args))
