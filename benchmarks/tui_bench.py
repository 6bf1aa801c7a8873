"""Tokens/s of the TUI vs the plain decoder on the same prompts, interleaved (`scripts/bench_tui`).

The app runs headless (Textual's test driver) with the real model; its reply's tok/s comes from the
decoder's own statistics, so the figure includes every cost the UI adds to the decoding thread
(batching, message posting, rendering on the same two cores).
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from sense_local.chat_template import fit_chat
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.sessions import SessionStore

from tui.app import SenseApp
from tui.settings import Settings
from tui.widgets import PromptBox

PROMPTS = [
    "Explain how a hash table works.",
    "Repeat exactly: The quick brown fox jumps over the lazy dog, and the dog keeps sleeping.",
    "Write a short poem about autumn leaves.",
    "Give me five tips for writing clean Python code.",
]


async def main(method: str, tokens: int, reps: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    app = SenseApp(sessions=SessionStore(tmp / "s.db"), settings=Settings(method=method, max_tokens=tokens))
    ui, cli = [], []
    async with app.run_test(size=(110, 32)) as pilot:
        chat = app.chat  # the chat screen holds the session and the reply under way
        while chat.session is None:
            await pilot.pause(0.05)
        for _ in range(reps):
            for text in PROMPTS:
                chat.new_session()
                await pilot.pause(0.05)
                box = app.query_one(PromptBox)
                box.text = text
                box.focus()
                await pilot.press("enter")
                await pilot.pause(0.05)  # the reply widget is mounted and generation started
                while chat.generating or chat._reply is not None:
                    await asyncio.sleep(0.25)  # poll rarely: the harness must not load the CPU it measures
                ui.append(chat.last_stats.to_dict()["tok_per_s"])
                decoder = make_decoder(app.engine, GenerationOptions(method=method, max_tokens=tokens))
                prompt, _ = fit_chat(app.engine, [{"role": "user", "content": text}], reserve=tokens)
                for _ in decoder.generate(prompt, tokens):
                    pass
                cli.append(decoder.stats.tok_per_s)
    ratios = [u / c for u, c in zip(ui, cli)]
    print(f"method {method}, {len(PROMPTS)} prompts x {reps} reps, {tokens} tokens: TUI {statistics.median(ui):.1f} "
          f"tok/s vs decoder {statistics.median(cli):.1f} tok/s; median ratio {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f})")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sense", 128, int(sys.argv[2]) if len(sys.argv) > 2 else 2))
