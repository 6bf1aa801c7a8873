"""Snapshot tests (pytest-textual-snapshot): the look of highlighted replies and the documents screen.
Regenerate after an intended change with `scripts/test tests/test_tui_snapshots.py --snapshot-update`."""
from __future__ import annotations

import shutil
from pathlib import Path


from sense_local.sessions import Message, SessionStore
from tui.app import SenseApp
from tui.settings import Settings

SIZE = (100, 28)
SPANS = [
    ["The ", "target", False], ["lighthouse keeper climbed", "context", False], [" the ", "target", False],
    ["spiral stairs", "docs", False], [" every ", "target", False], ["night", "context", True],
    [" and polished ", "target", False], ["the great lens", "pld", False], [".", "target", False],
]

SOURCES = [{"number": 1, "path": "/home/me/notes/lighthouses.md", "line": 12, "page": 0, "score": 0.03,
            "snippet": "The keeper climbed the spiral stairs every night to polish the great lens."},
           {"number": 2, "path": "/home/me/books/coast-guide.pdf", "line": 1, "page": 4, "score": 0.02,
            "snippet": "Lighthouse keepers kept logbooks of weather and passing ships."}]


async def _ready(pilot):
    """Wait until the model is loaded, the session shown and the status bar filled in."""
    app = pilot.app
    while app.chat.session is None or app.engine is None or "loading" in str(app.query_one("#status").render()):
        await pilot.pause(0.05)
    box = app.query_one("#prompt")
    box.cursor_blink = False  # a blinking cursor would make the picture timing-dependent
    # TextArea caches rendered lines under a key that holds the cursor only while it blinks (Textual
    # 8.2): a line cached in the blink's off phase would be drawn without the cursor from now on
    box._line_cache.clear()
    box.refresh()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.5)


def lighthouse_session(tmp_path) -> SessionStore:
    """A session store holding one highlighted, sourced exchange."""
    store = SessionStore(tmp_path / "s.db")
    session = store.create("Lighthouse", "SmolLM2-135M-Instruct.Q8_0.gguf", "sense", Settings().to_dict())
    store.add_message(session.id, Message("user", "Tell me about the lighthouse keeper."))
    store.add_message(session.id, Message("assistant", "".join(s[0] for s in SPANS), SPANS,
                                          {"footer": "16 tokens · 95.0 tok/s · tau 2.67 · accepted 10/12",
                                           "sources": SOURCES}))
    return store


def test_chat_with_highlighting(snap_compare, tmp_path):
    store = lighthouse_session(tmp_path)
    app = SenseApp(sessions=store)
    assert snap_compare(app, terminal_size=SIZE, run_before=_ready)


MARKDOWN_SPANS = [  # a reply in Markdown whose drafted spans fall inside code, bold text and a list
    ["## Reading a ", "target", False], ["file", "context", False], ["\n\nUse **", "target", False],
    ["pathlib", "pld", False], ["** and call `", "target", False], ["read_text()", "context", False],
    ["`:\n\n```python\nfrom pathlib import Path\n", "target", False], ["text = Path(\"notes.md\")", "docs", False],
    [".read_text()\n```\n\n- ", "target", False], ["no need to close", "context", True],
    [" the file\n- *errors* raise `OSError`", "target", False],
]


def test_markdown_reply_with_highlighting(snap_compare, tmp_path):
    """Markdown rendered (no fences, backticks or asterisks shown) with the highlight spans inside it."""
    store = SessionStore(tmp_path / "s.db")
    session = store.create("Files", "SmolLM2-135M-Instruct.Q8_0.gguf", "sense", Settings().to_dict())
    store.add_message(session.id, Message("user", "How do I read a file?"))
    store.add_message(session.id, Message("assistant", "".join(s[0] for s in MARKDOWN_SPANS), MARKDOWN_SPANS,
                                          {"footer": "40 tokens · 90.0 tok/s · tau 2.10 · accepted 9/14"}))
    assert snap_compare(SenseApp(sessions=store), terminal_size=SIZE, run_before=_ready)


async def _ready_at_end(pilot):
    """_ready, then the transcript scrolled to its end and settled (the scrollbar thumb is drawn where
    the scroll position is: the picture is taken only once the follow-the-end scroll has finished)."""
    await _ready(pilot)
    transcript = pilot.app.query_one("#transcript")
    for _ in range(100):
        if transcript.scroll_y == transcript.max_scroll_y:
            break
        await pilot.pause(0.05)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.3)


def test_small_terminal_60x15_snapshot(snap_compare, tmp_path):
    """The 60x15 picture. It used to vary between runs: the session was shown before the narrow
    layout re-wrapped its lines, and the transcript stayed one line short of its end."""
    assert snap_compare(SenseApp(sessions=lighthouse_session(tmp_path)), terminal_size=(60, 15),
                        run_before=_ready_at_end)


def test_small_terminal_60x15(tmp_path):
    """60 columns x 15 rows: no legend, a short prompt box, a compact footer, an abbreviated status
    bar, and the transcript at its end."""
    import asyncio

    from textual.widgets import Footer

    async def run():
        app = SenseApp(sessions=lighthouse_session(tmp_path))
        async with app.run_test(size=(60, 15)) as pilot:
            await _ready(pilot)
            assert app.query_one("#legend").region.height == 0
            assert app.query_one("#prompt").outer_size.height == 3
            assert app.query_one(Footer).compact
            status = str(app.query_one("#status").render())
            assert 0 < len(status) <= 58  # abbreviated to fit one line of 60 columns (padding 1 each side)
            transcript = app.query_one("#transcript")
            assert transcript.max_scroll_y > 0 and transcript.scroll_y == transcript.max_scroll_y

    asyncio.run(run())


def test_documents_screen(snap_compare, tmp_path, monkeypatch, engine):
    from sense_local.datastore import index_paths

    docs = Path("/tmp/sense-local-snapshot-docs")  # a fixed path: it is shown on screen
    shutil.rmtree(docs, ignore_errors=True)
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\n\nThe walrus operator assigns inside expressions.\n")
    (docs / "empty.txt").write_text("")
    home = tmp_path / "home"
    monkeypatch.setenv("SENSE_HOME", str(home))
    index_paths(engine, home / "stores" / "default", [docs])

    async def open_documents(pilot):
        await _ready(pilot)
        await pilot.press("f3")
        while not pilot.app.screen.query("#folder"):
            await pilot.pause(0.05)
        pilot.app.screen.query_one("#folder").cursor_blink = False  # focused: a blinking cursor is timing
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.3)

    sessions = SessionStore(tmp_path / "s.db")
    sessions.create("Documents", "SmolLM2-135M-Instruct.Q8_0.gguf", "sense", Settings().to_dict())
    app = SenseApp(sessions=sessions)
    try:
        assert snap_compare(app, terminal_size=SIZE, run_before=open_documents)
    finally:
        shutil.rmtree(docs, ignore_errors=True)


def test_documents_screen_during_indexing(snap_compare, tmp_path, monkeypatch, engine):
    """Mid-indexing: one document searchable by words only, the model pass a quarter through (the
    progress report is posted with fixed figures and a frozen ETA: the picture must not depend on time)."""
    import threading

    from sense_local.datastore import index_paths
    from tui.messages import IndexProgress

    docs = Path("/tmp/sense-local-snapshot-docs")
    shutil.rmtree(docs, ignore_errors=True)
    docs.mkdir()
    (docs / "notes.md").write_text("# Notes\n\nThe walrus operator assigns inside expressions.\n")
    home = tmp_path / "home"
    monkeypatch.setenv("SENSE_HOME", str(home))
    words_only = threading.Event()
    index_paths(engine, home / "stores" / "default", [docs], on_searchable=lambda n: words_only.set(), cancel=words_only)

    async def indexing(pilot):
        await _ready(pilot)
        await pilot.press("f3")
        while not pilot.app.screen.query("#folder"):
            await pilot.pause(0.05)
        screen = pilot.app.screen
        screen.query_one("#folder").cursor_blink = False
        monkeypatch.setattr(screen._rate, "eta", lambda: 37.0)
        screen.post_message(IndexProgress(1200, 4800, str(docs / "notes.md"), 96.0))
        await pilot.pause(0.3)
        if screen._ticker is not None:
            screen._ticker.stop()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.2)

    sessions = SessionStore(tmp_path / "s.db")
    sessions.create("Documents", "SmolLM2-135M-Instruct.Q8_0.gguf", "sense", Settings().to_dict())
    try:
        assert snap_compare(SenseApp(sessions=sessions), terminal_size=SIZE, run_before=indexing)
    finally:
        shutil.rmtree(docs, ignore_errors=True)
