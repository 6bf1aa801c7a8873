"""oterm, the terminal client for Ollama, run in tmux against a real `sense-local serve` on the 135M:
it lists the model through /api/tags and /api/show, chats through /v1/chat/completions of the same
base URL, and the server's answer appears on its screen."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ollama
import pytest

from test_server import Server

OTERM = Path(sys.executable).parent / "oterm"
TAGGED = "smollm2-135m-instruct-q8_0:latest"
QUESTION = "Name a fruit."
WIDTH, HEIGHT = 140, 45
FOCUSED_SAVE = re.compile(r"\x1b\[(?:\d+;)*7m(?:\x1b\[[\d;]*m)* Save ")

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (scripts/setup installs it)")


class Terminal:
    """A tmux session running one command, read as text (and with colours, to see what has focus)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name  # its own tmux server (-L): no other session's size or options apply
        # COLUMNS and LINES as the window: pytest's may be inherited, and Textual reads them first
        env = {**env, "COLUMNS": str(WIDTH), "LINES": str(HEIGHT)}
        self.run("new-session", "-d", "-s", name, "-x", str(WIDTH), "-y", str(HEIGHT),
                 " ".join(["env", *(f"{k}={v}" for k, v in env.items()), *command]))

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self, *, colours: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if colours else []), "-t", self.name)

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", self.name, *(["-l"] if literal else []), *keys)
        time.sleep(0.4)

    def wait_for(self, seen, what: str, timeout: float = 90) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.screen()
            if seen(text):
                return text
            time.sleep(0.5)
        size = self.run("display", "-p", "-t", self.name, "#{window_width}x#{window_height}").strip()
        raise AssertionError(f"oterm did not show {what} in {timeout:.0f} s; the screen ({size}):\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=30)


def _save_has_focus(terminal: Terminal) -> bool:
    """The dialog's Save button is drawn reversed (SGR parameter 7) when it has the focus."""
    return bool(FOCUSED_SAVE.search(terminal.screen(colours=True)))


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def test_oterm_lists_the_model_and_shows_the_servers_answer(server, tmp_path):
    # what the server answers oterm's request: greedy, as /api/show's parameters tell oterm to ask
    # (temperature 0, top_p 1, max tokens 512)
    expected = ollama.Client(host=server.base).chat(
        TAGGED, [{"role": "user", "content": QUESTION}],
        options={"temperature": 0, "top_p": 1.0, "num_predict": 512}).message.content.strip()
    assert expected
    data = tmp_path / "oterm"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({"splash-screen": False, "theme": "textual-dark"}))
    env = {"OLLAMA_URL": server.base, "OTERM_DATA_DIR": str(data), "HOME": str(tmp_path), "TERM": "xterm-256color",
           "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",  # its update check: no network
           "PATH": os.environ.get("PATH", "")}
    terminal = Terminal(f"oterm-{os.getpid()}", [str(OTERM)], env)
    try:
        terminal.wait_for(lambda s: "Ctrl+N to start a new chat" in s, "its welcome screen")
        terminal.keys("C-n")
        terminal.wait_for(lambda s: TAGGED in s, "the model from /api/tags")  # the new-chat dialog's list
        terminal.keys("Tab")
        terminal.keys("smollm2", literal=True)
        terminal.keys("Down")
        terminal.keys("Down")
        terminal.keys("Enter")  # picks the listed model; oterm then reads /api/show
        terminal.wait_for(lambda s: f"Model: {TAGGED}" in s and "512" in s, "the model's parameters from /api/show")
        for _ in range(6):
            if _save_has_focus(terminal):
                break
            terminal.keys("BTab")
        assert _save_has_focus(terminal), terminal.screen()
        terminal.keys("Enter")
        terminal.wait_for(lambda s: f"model: {TAGGED}" in s and "❯" in s, "a new chat")
        terminal.keys(QUESTION, literal=True)
        terminal.keys("Enter")
        shown = terminal.wait_for(lambda s: expected in s and "ctx " in s, f"the answer {expected!r}")
        assert f"❯ {QUESTION}" in shown
        assert "/ 2.0k" in shown  # the context length oterm read from /api/ps
    finally:
        terminal.close()
    assert server.health()["completed"] >= 2  # the reference request and oterm's
