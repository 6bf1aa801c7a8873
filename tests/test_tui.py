"""The Textual app on the real default model, driven by Pilot."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from sense_local.sessions import Message as StoredMessage
from sense_local.sessions import SessionStore
from sense_local.conversation import ConversationConfig
from tui.app import SenseApp
from tui.settings import Settings
from tui.widgets import ChatMessage, PromptBox, span_style

SIZE = (110, 32)


async def wait_for(pilot, condition, timeout=120.0, shown=None):
    """Poll `condition` until true; on timeout fail with `shown()` (what the screen said instead)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time" + (f"; shown: {shown()!r}" if shown else ""))
        await pilot.pause(0.05)


def replies(app):
    return [m for m in app.query(ChatMessage) if m.role == "assistant"]


async def send(pilot, app, text):
    """Type and send a message; returns once its reply widget exists (it may already be complete)."""
    before = len(replies(app))
    box = app.query_one(PromptBox)
    box.text = text
    box.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(replies(app)) > before)


async def start_long_reply(pilot, app, streamed: int = 5, text: str = "Write a long story about a dragon who learns to bake bread."):
    """Send a request for a long reply and return once `streamed` tokens of it are on screen."""
    await wait_for(pilot, lambda: app.chat.session is not None)
    await send(pilot, app, text)
    await wait_for(pilot, lambda: app.chat._streamed >= streamed)


def make_app(tmp_path, **settings):
    store = SessionStore(tmp_path / "sessions.db")
    return SenseApp(sessions=store, settings=Settings(**{"method": "sense", "max_tokens": 48, **settings}))


QUOTE = ("Repeat exactly: The lighthouse keeper climbed the spiral stairs every evening and polished "
         "the great lens until it shone.")


@pytest.mark.asyncio
async def test_streamed_reply_highlighting_matches_event_provenance(tmp_path, monkeypatch):
    from sense_local.speculative.loop import SpecDecoder

    recorded = []  # every event the decoder handed to the app (drafting decisions are timing-dependent,
    real_generate = SpecDecoder.generate  # so we record them rather than re-run)

    def recording_generate(self, *args, **kwargs):
        for ev in real_generate(self, *args, **kwargs):
            recorded.append((ev.text, ev.source))
            yield ev

    monkeypatch.setattr(SpecDecoder, "generate", recording_generate)
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await send(pilot, app, QUOTE)
        await wait_for(pilot, lambda: not app.chat.generating)
        reply = replies(app)[0]
        assert len(replies(app)) == 1 and reply.content.strip()
        shown = "".join(t for t, _, _ in reply.spans)
        assert shown == "".join(t for t, _ in recorded)
        by_char = [src for t, src in recorded for _ in t]
        got = [src for t, src, _ in reply.spans for _ in t]
        assert got == by_char
        assert any(src != "target" for src in got)  # something was drafted and accepted
        text = reply.highlighted_text()
        for chunk_start, (t, src, soft) in zip(_starts(reply.spans), reply.spans):
            if src != "target":
                styles = {str(s.style) for s in text.spans if s.start <= chunk_start < s.end}
                assert span_style(src, soft) in styles
        # toggling removes the highlighting and keeps the text
        await pilot.press("f2")
        assert not reply.highlight and reply.content == shown
        assert "tok/s" in reply.footer


def _starts(spans):
    pos = 0
    for t, _, _ in spans:
        yield pos
        pos += len(t)


@pytest.mark.asyncio
async def test_cancel_then_send_again_and_session_survives_restart(tmp_path):
    app = make_app(tmp_path, max_tokens=400, method="pld")
    async with app.run_test(size=SIZE) as pilot:
        await start_long_reply(pilot, app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        first = [m for m in app.query(ChatMessage) if m.role == "assistant"][-1]
        assert "stopped" in first.footer and app.chat.last_stats.tokens < 400
        await send(pilot, app, "Now say hello in French.")
        await wait_for(pilot, lambda: not app.chat.generating)
        second = [m for m in app.query(ChatMessage) if m.role == "assistant"][-1]
        assert second.content.strip() and "stopped" not in second.footer
        session_id = app.chat.session.id
    # a new app on the same database shows the same conversation
    again = SenseApp(sessions=SessionStore(tmp_path / "sessions.db"))
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: again.chat.session is not None)
        assert again.chat.session.id == session_id
        roles = [m.role for m in again.query(ChatMessage)]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert [m for m in again.query(ChatMessage)][-1].content == second.content


@pytest.mark.asyncio
async def test_a_message_sent_during_a_reply_is_kept_and_sent_after_it(tmp_path):
    # plain decoding, long: the reply must still be going when the message is sent (with `pld` the
    # 135M's story, which repeats itself, reached 253 tokens in long accepted drafts before the
    # pilot saw its 5th, and all 400 before the message went)
    app = make_app(tmp_path, max_tokens=1500, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await start_long_reply(pilot, app)
        box = app.query_one(PromptBox)
        box.text = "Now say hello in French."
        box.focus()
        await pilot.press("enter")
        assert app.chat.queued == ["Now say hello in French."] and app.chat.generating  # kept; the reply goes on
        await pilot.press("escape")  # the reply stops, and the queued message goes
        await wait_for(pilot, lambda: len(replies(app)) == 2 and not app.chat.generating)
        users = [m.content for m in app.query(ChatMessage) if m.role == "user"]
        assert users[-1] == "Now say hello in French." and not app.chat.queued
        assert "stopped" in replies(app)[0].footer and replies(app)[1].content.strip()
        stored = [m.content for m in app.sessions.messages(app.chat.session.id) if m.role == "user"]
        assert stored[-1] == "Now say hello in French."


@pytest.mark.asyncio
async def test_a_long_prompt_shows_how_far_it_has_been_read(tmp_path):
    from pydoc_data.topics import topics

    app = make_app(tmp_path, max_tokens=8, method="ar", grounded=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await send(pilot, app, "Summarise this:\n" + topics["compound"][:9000])
        reply = replies(app)[-1]
        await wait_for(pilot, lambda: "reading the prompt:" in reply.footer or not app.chat.generating)
        assert "reading the prompt:" in reply.footer and " / " in reply.footer
        await wait_for(pilot, lambda: not app.chat.generating)
        assert "reading the prompt" not in reply.footer and "tok/s" in reply.footer  # replaced by the figures
        # stopped while the prompt is read: the question leaves the conversation, its text goes back to the box
        text = "Summarise this too:\n" + topics["compound"][9000:18000]
        await send(pilot, app, text)
        await wait_for(pilot, lambda: "reading the prompt:" in replies(app)[-1].footer or not app.chat.generating)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        box = app.query_one(PromptBox)
        assert box.text == text
        assert box.cursor_location == box.document.end  # typing goes on where the question ended
        assert [m.content for m in app.sessions.messages(app.chat.session.id) if m.role == "user"][-1].startswith("Summarise this:")
        assert len(replies(app)) == 1


@pytest.mark.asyncio
async def test_indexing_from_documents_screen_while_chatting(tmp_path, monkeypatch):
    from pydoc_data.topics import topics

    monkeypatch.setenv("SENSE_HOME", str(tmp_path / "home"))
    folder = tmp_path / "docs"
    folder.mkdir()
    for t in ("assert", "pass", "del"):
        (folder / f"{t}.txt").write_text(topics[t])
    app = make_app(tmp_path, method="sense", max_tokens=24)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await pilot.press("f3")
        screen = app.screen
        screen.query_one("#folder").value = str(folder)
        await pilot.click("#add")
        status = lambda: str(screen.query_one("#index-status").render())  # noqa: E731
        # the model pass over three short files can end between two polls: progress or done, not an error
        await wait_for(pilot, lambda: "tokens" in status() or status().startswith("done:"), 60, shown=status)
        bar = screen.query_one("#index-progress")
        assert bar.display and bar.total > 1  # the progress bar was shown, sized in tokens
        await pilot.press("escape")  # back to the chat while indexing goes on
        await send(pilot, app, "Say hi.")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert [m for m in app.query(ChatMessage) if m.role == "assistant"][-1].content.strip()
        await wait_for(pilot, lambda: "done" in str(screen.query_one("#index-status").render()), 240)
        assert app.store is not None and len(app.store.manifest.documents) == 3
        await pilot.press("f3")
        assert app.screen is screen and screen.query_one("#docs-table").row_count == 3
        await pilot.press("escape")
        # grounded chat: the reply lists the passages it was given, from the right document
        await send(pilot, app, "What does the pass statement do?")
        await wait_for(pilot, lambda: not app.chat.generating)
        reply = [m for m in app.query(ChatMessage) if m.role == "assistant"][-1]
        assert reply.sources and Path(reply.sources[0]["path"]).name == "pass.txt"
        assert "pass.txt, line" in reply.sources_text().plain
        stored = app.sessions.messages(app.chat.session.id)[-1]
        assert stored.stats["sources"] == reply.sources  # kept with the session


def test_bad_model_is_a_message_not_a_crash(tmp_path):
    async def run():
        app = SenseApp(ConversationConfig(model=str(tmp_path / "missing.gguf")), sessions=SessionStore(tmp_path / "s.db"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "error" in str(app.query_one("#status").render()), 30)
            assert "not found" in str(app.query_one("#status").render())
            await send_nothing(pilot)

    async def send_nothing(pilot):
        await pilot.press("h", "i", "enter")  # no engine: a notice, no crash

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (scripts/setup installs it where it can)")
def test_tui_smoke_in_tmux():
    proc = subprocess.run([str(ROOT / "scripts" / "tui_smoke")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tok/s" in proc.stdout
    quit_ms = int(proc.stdout.rsplit("exited in ", 1)[1].split()[0])
    assert quit_ms < 2000  # Ctrl+Q during a streaming reply: the process is gone within 2 s


@pytest.mark.asyncio
async def test_model_picker_switches_models_and_the_chat_goes_on(tmp_path):
    from textual.widgets import ListView

    from sense_local.registry import resolve_model
    from tui.screens import ModelPickerScreen

    app = make_app(tmp_path, max_tokens=6, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        first = app.model_path
        await send(pilot, app, "Say hi.")
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        view = app.screen.query_one(ListView)
        names = [item.model_name for item in view.children]
        assert "smollm2-135m-instruct-q4_1" in names and "qwen2.5-coder-1.5b-instruct-q4_k_m" in names
        view.index = names.index("smollm2-135m-instruct-q4_1")
        await pilot.press("enter")
        want = resolve_model("smollm2-135m-instruct-q4_1")
        await wait_for(pilot, lambda: app.engine is not None and app.model_path == want)
        assert first != want
        await send(pilot, app, "Say bye.")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert [m.role for m in app.query(ChatMessage)] == ["user", "assistant", "user", "assistant"]
        assert "SmolLM2-135M-Instruct.Q4_1.gguf" in str(app.query_one("#status").render())


@pytest.mark.asyncio
async def test_quit_during_a_reply_keeps_the_partial_reply_and_exits_fast(tmp_path):
    import time

    app = make_app(tmp_path, max_tokens=400, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await start_long_reply(pilot, app)
        session_id = app.chat.session.id
        start = time.monotonic()
        await pilot.press("ctrl+q")
        while app.is_running and time.monotonic() - start < 5:
            await asyncio.sleep(0.02)
        took = time.monotonic() - start
    assert took < 0.5 + 0.5  # the decoder stops between decodes; Textual's shutdown adds a little
    stored = SessionStore(tmp_path / "sessions.db").messages(session_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].content.strip() and "stopped" in stored[1].stats["footer"]


@pytest.mark.asyncio
async def test_the_first_reply_on_a_fresh_model_never_waits_for_a_calibration(tmp_path, monkeypatch):
    """No cost curve known (a fresh data dir): the reply starts from the prior curve at once, nothing
    is measured, and what the reply timed is kept for the next one."""
    from sense_local.speculative import cost

    monkeypatch.setenv("SENSE_HOME", str(tmp_path / "fresh-home"))  # no cost curve cached here
    monkeypatch.setattr(cost, "LEARNED_AFTER", 1)
    measured = []
    monkeypatch.setattr(cost, "measure_cost_curve", lambda *a, **k: measured.append(1) or cost.PRIOR)
    app = make_app(tmp_path, max_tokens=120, method="pld")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        assert not cost.cost_curve_known(app.engine)
        await send(pilot, app, "Repeat exactly, twice: the quick brown fox jumps over the lazy dog. "
                               "The quick brown fox jumps over the lazy dog.")
        await wait_for(pilot, lambda: not app.chat.generating)
        assert replies(app)[-1].content.strip() and not measured
        assert app.conversation.stats.forwards > 0 and "tok/s" in str(app.query_one("#status").render())
        if app.conversation._decoder.cost.observed >= 1:  # it timed a drafted decode: that is kept
            assert cost.cost_curve_known(app.engine)


@pytest.mark.asyncio
async def test_first_launch_welcomes_and_typing_on_the_transcript_goes_to_the_prompt(tmp_path):
    from tui.chat import WELCOME

    app = make_app(tmp_path, max_tokens=4, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        welcome = app.query(".welcome")
        assert len(welcome) == 1 and "F3" in str(welcome.first().render()) and WELCOME.startswith("Type")
        app.query_one("#transcript").focus()
        await pilot.press("h", "i", "enter")  # typed with the transcript focused: nothing lost
        await wait_for(pilot, lambda: len(replies(app)) == 1 and not app.chat.generating)
        assert [m.content for m in app.query(ChatMessage) if m.role == "user"] == ["hi"]
        assert not app.query(".welcome")  # gone once the chat starts


@pytest.mark.asyncio
async def test_transcript_shows_the_end_after_esc(tmp_path):
    app = make_app(tmp_path, max_tokens=400, method="ar")
    async with app.run_test(size=(80, 16)) as pilot:
        await start_long_reply(pilot, app, 150, "Write a long story about a dragon.\n" * 3)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.chat.generating)
        transcript = app.query_one("#transcript")
        await wait_for(pilot, lambda: transcript.max_scroll_y > 0, 10)  # laid out: the transcript overflows
        await pilot.pause(0.3)
        assert "stopped" in replies(app)[-1].footer
        assert transcript.scroll_y >= transcript.max_scroll_y - 1


@pytest.mark.asyncio
async def test_settings_save_with_enter_and_say_which_field_is_wrong(tmp_path):
    from textual.widgets import Input

    from tui.screens import SettingsScreen

    app = make_app(tmp_path, max_tokens=48, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#theta", Input).value = "abc"
        app.screen.query_one("#theta", Input).focus()
        await pilot.press("enter")
        assert isinstance(app.screen, SettingsScreen)  # refused, with the field named
        assert any("Theta: 'abc' is not a number" in n.message for n in app._notifications)
        app.screen.query_one("#theta", Input).value = ""
        app.screen.query_one("#max_tokens", Input).value = "99999999"  # longer than any reply can be
        app.screen.query_one("#max_tokens", Input).focus()
        await pilot.press("enter")
        assert isinstance(app.screen, SettingsScreen)
        ceiling = f"Max tokens: at most {app.engine.n_ctx:,} (the model's context); got 99,999,999"
        assert any(n.message == ceiling for n in app._notifications)
        app.screen.query_one("#max_tokens", Input).value = "77"
        app.screen.query_one("#max_tokens", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert app.chat.settings.max_tokens == 77 and app.sessions.get(app.chat.session.id).settings["max_tokens"] == 77


@pytest.mark.asyncio
async def test_sessions_rename_the_current_one_and_delete_asks_first(tmp_path):
    from textual.widgets import Input

    from tui.screens import SessionsScreen

    app = make_app(tmp_path, max_tokens=4, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        current = app.chat.session.id
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen))
        app.screen.query_one("#sessions").index = None  # nothing highlighted: rename acts on the current one
        await pilot.press("r")
        box = app.screen.query_one("#rename", Input)
        box.value = "Renamed chat"
        await pilot.press("enter")
        assert app.sessions.get(current).title == "Renamed chat"
        await pilot.press("d")  # first press only asks
        assert app.sessions.get(current) is not None
        await pilot.press("d")
        assert app.sessions.get(current) is None
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, SessionsScreen))
        # a fresh session took its place (SQLite may give it the freed id)
        assert app.chat.session is not None and app.sessions.get(app.chat.session.id) is not None
        assert app.chat.session.title.startswith("Chat ") and app.sub_title == app.chat.session.title


def code_session(tmp_path) -> SessionStore:
    """A session store whose one session ends in a reply with two fenced code blocks."""
    store = SessionStore(tmp_path / "sessions.db")
    session = store.create("Loops", "model", "ar", Settings(method="ar", max_tokens=1).to_dict())
    store.add_message(session.id, StoredMessage("user", "Show me two loops."))
    store.add_message(session.id, StoredMessage("assistant", CODE_REPLY))
    return store


CODE_REPLY = ("A while loop:\n```python\nwhile True:\n    break\n```\nand a for loop:\n\n"
              "```python\nfor i in range(3):\n    print(i)\n```\nThat is all.")


@pytest.mark.asyncio
async def test_copy_the_last_reply_and_its_last_code_block(tmp_path):
    from textual.command import CommandList, CommandPalette

    app = SenseApp(sessions=code_session(tmp_path))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        await pilot.press("f9")
        assert app.clipboard == "for i in range(3):\n    print(i)"  # the last block, without its fences
        await pilot.press("f8")
        assert app.clipboard == CODE_REPLY
        assert any(n.message == f"Copied reply ({len(CODE_REPLY)} characters)" for n in app._notifications)
        # the palette offers both: "copy last code" there copies the block again
        app.copy_to_clipboard("")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), 10)
        await pilot.press(*"copy last code")
        await wait_for(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, 10)
        await pilot.press("enter")  # the best match is highlighted
        await wait_for(pilot, lambda: app.clipboard == "for i in range(3):\n    print(i)", 10, shown=lambda: app.clipboard)
        # a new chat has no reply: the notice says there is nothing to copy, the clipboard is kept
        await pilot.press("ctrl+n")
        await pilot.press("f9")
        assert any(n.message == "No code block in the last reply" for n in app._notifications)
        assert app.clipboard == "for i in range(3):\n    print(i)"
        # a real reply (of one token, by the session's settings): F8 copies what the model wrote
        await send(pilot, app, "Say hi.")
        await wait_for(pilot, lambda: not app.chat.generating)
        await pilot.press("f8")
        assert app.clipboard == replies(app)[-1].content and app.clipboard.strip()


@pytest.mark.asyncio
async def test_a_one_token_reply_says_token_and_no_speed_and_long_titles_use_the_width(tmp_path):
    from tui.screens import SessionsScreen

    app = make_app(tmp_path, max_tokens=1, method="ar")
    question = ("Please explain in detail how a lighthouse keeper in the nineteenth century kept the lamp "
                "burning through a winter storm")
    async with app.run_test(size=(240, 40)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await send(pilot, app, question)
        await wait_for(pilot, lambda: not app.chat.generating)
        footer = replies(app)[-1].footer
        assert footer.startswith("1 token · tau ") and "tok/s" not in footer
        assert "tok/s" not in str(app.query_one("#status").render())
        assert app.chat.session.title == question and len(question) > 100  # not cut at 40
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await pilot.pause(0.2)
        row = app.screen.query_one("#sessions").highlighted_child.query_one(".row")
        assert question in str(row.render()) and row.size.width >= len(str(row.render()))  # all of it shows


@pytest.mark.asyncio
async def test_both_lists_open_on_the_current_row_and_delete_names_the_highlighted_session(tmp_path):
    from textual.widgets import Input, ListView

    from tui.confirm import ConfirmScreen
    from tui.screens import ModelPickerScreen, SessionsScreen

    store = SessionStore(tmp_path / "sessions.db")
    ids = [store.create(title, "model", "ar", Settings(method="ar", max_tokens=4).to_dict()).id
           for title in ("Alpha", "Beta", "Gamma")]
    for sid in ids:  # each gets a message, so "updated" orders them Gamma, Beta, Alpha
        store.add_message(sid, StoredMessage("user", "hi"))
    app = SenseApp(sessions=store)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        app.chat.open_session(ids[0])  # Alpha: the bottom row
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen))
        view = app.screen.query_one("#sessions", ListView)
        assert [item.session_id for item in view.children] == ids[::-1]
        assert view.index == 2 and view.highlighted_child.session_id == ids[0]  # highlighted on open
        await pilot.press("up")  # Beta
        await pilot.press("r")
        app.screen.query_one("#rename", Input).value = "Beta renamed"
        await pilot.press("enter")
        assert store.get(ids[1]).title == "Beta renamed" and store.get(ids[0]).title == "Alpha"
        assert view.highlighted_child.session_id == ids[1]  # the highlight survives the rename
        await pilot.press("d")  # asks, naming the highlighted session, not the current one
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        assert "Beta renamed" in app.screen.question and "Alpha" not in app.screen.question
        await pilot.press("escape")  # no: nothing deleted, back to the list
        await wait_for(pilot, lambda: isinstance(app.screen, SessionsScreen), 5)
        assert store.get(ids[1]) is not None
        await pilot.press("d", "d")
        await wait_for(pilot, lambda: store.get(ids[1]) is None, 5)
        assert store.get(ids[0]) is not None and store.get(ids[2]) is not None
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.dialog_open, 5)
        assert app.chat.session.id == ids[0]  # the chat on screen is untouched
        # the models list opens on the running model, and its header is not cut
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        view = app.screen.query_one("#models", ListView)
        assert view.highlighted_child is not None and view.highlighted_child.model_path == app.model_path
        header = app.screen.query_one(".dialog > Label")
        assert header.size.width >= len(str(header.render()))


@pytest.mark.asyncio
async def test_del_on_a_document_asks_first(tmp_path, tmp_path_factory, engine):
    from conftest import pydoc_topics_store
    from textual.widgets import DataTable

    from tui.confirm import ConfirmScreen

    store = pydoc_topics_store(engine, tmp_path_factory, "tui-remove", ["pass", "del"])
    app = SenseApp(ConversationConfig(store=str(store)), sessions=SessionStore(tmp_path / "s.db"),
                   settings=Settings(method="ar", max_tokens=4))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.store is not None)
        await pilot.press("f3")
        screen = app.screen
        table = screen.query_one("#docs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, 10)
        table.focus()
        first = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        await pilot.press("delete")  # asks, naming it; nothing removed yet
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        assert Path(first).name in app.screen.question and table.row_count == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, 5)
        assert table.row_count == 2
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5)
        await pilot.press("delete")  # Del twice removes
        await wait_for(pilot, lambda: table.row_count == 1, 10)
        assert [str(k.value) for k in table.rows] != [first]
        assert first not in app.store.manifest.documents


@pytest.mark.asyncio
async def test_f1_help_lists_the_real_bindings_and_the_colours(tmp_path):
    from tui.dialogs import HelpScreen
    from tui.widgets import LEGEND_LABELS

    app = make_app(tmp_path, max_tokens=4, method="ar")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), 5)
        lines = _rendered(app.screen.query_one("#help-text"))
        for binding in SenseApp.BINDINGS:  # every described key of the app, as the footer shows it
            if binding.description:
                want = f"{app.get_key_display(binding)} {binding.description}"
                assert any(" ".join(line.split()).startswith(want) for line in lines), want
        text = "\n".join(lines)
        assert "Send the message" in text and "Delete" in text and "Remove document" in text
        assert all(label in text for label in LEGEND_LABELS.values())
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), 5)


def _rendered(widget) -> list[str]:
    """A Static's content as the lines a terminal of its width would show."""
    import io

    from rich.console import Console

    console = Console(width=widget.size.width or 100, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text().splitlines()


@pytest.mark.asyncio
async def test_settings_scroll_at_60x15_and_every_field_and_save_are_reached_by_tab(tmp_path):
    app = make_app(tmp_path, max_tokens=4, method="ar")
    async with app.run_test(size=(60, 15)) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.dialog_open, 5)
        dialog = app.screen.query_one(".dialog")
        assert dialog.region.right <= 60 and dialog.region.bottom <= 15
        reached = []
        for _ in range(12):
            await pilot.press("tab")
            await pilot.pause(0.05)
            focused = app.focused
            reached.append(focused.id)
            assert dialog.region.contains_region(focused.region), focused.id  # scrolled into view
            if focused.id == "temperature":
                focused.value = "0.3"
            if focused.id == "save":
                break
        assert {"method", "theta", "max_tokens", "temperature", "system", "grounded", "save"} <= set(reached)
        assert dialog.scroll_y > 0
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.dialog_open, 5)
        assert app.chat.settings.temperature == 0.3


def _footer_keys(app):
    """The footer's keys as shown, left to right, with the columns they take."""
    from textual.widgets import Footer

    footer = app.screen.query_one(Footer)
    keys = sorted((k for k in footer.children if k.display), key=lambda k: k.region.x)
    return footer, [(" ".join(k.render().plain.split()), k.region) for k in keys]


@pytest.mark.asyncio
async def test_the_footer_shows_the_main_keys_from_its_start_at_60_columns_and_notices_spare_the_box(tmp_path):
    from textual.widgets._toast import Toast

    app = make_app(tmp_path, max_tokens=4, method="ar")
    async with app.run_test(size=(60, 15), notifications=True) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        await pilot.pause(0.3)
        footer, keys = _footer_keys(app)
        labels = [label for label, _ in keys]
        assert footer.scroll_x == 0 and labels[:4] == ["f1 Help", "f3 Docs", "f4 Chats", "f5 Settings"], labels
        assert all(region.right <= 60 for _, region in keys)  # whole keys only, none cut at the edge
        assert not any("palette" in label for label in labels)
        app.notify("Queued: sent when this reply ends (Esc stops it).")
        await wait_for(pilot, lambda: app.screen.query(Toast), 5)
        toast = app.screen.query_one(Toast)
        await pilot.pause(0.1)
        assert not toast.region.overlaps(app.query_one(PromptBox).region)
        await pilot.resize_terminal(110, 32)  # wide: every key, in the app's order
        await pilot.pause(0.3)
        labels = [label for label, _ in _footer_keys(app)[1]]
        assert labels[:6] == ["esc Cancel", "f1 Help", "f2 Highlight", "f3 Documents", "f4 Sessions", "f5 Settings"]


@pytest.mark.asyncio
async def test_after_switching_to_a_model_the_documents_were_not_indexed_with_status_and_f3_say_so(
        tmp_path, tmp_path_factory, engine):
    from textual.widgets import DataTable, ListView

    from sense_local.registry import resolve_model
    from tui.screens import ModelPickerScreen
    from conftest import pydoc_topics_store

    store = pydoc_topics_store(engine, tmp_path_factory, "tui-other-model", ["pass", "del"])
    app = SenseApp(ConversationConfig(store=str(store)), sessions=SessionStore(tmp_path / "s.db"),
                   settings=Settings(method="ar", max_tokens=4))
    status = lambda: str(app.query_one("#status").render())  # noqa: E731

    async def documents_states():
        await pilot.press("f3")
        table = app.screen.query_one("#docs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2, 10)
        states = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        note = str(app.screen.query_one("#index-status").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0], 5)
        return states, note

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.store is not None)
        assert "store store" in status()
        assert (await documents_states())[0] == ["indexed", "indexed"]
        await pilot.press("f7")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen), 5)
        view = app.screen.query_one(ListView)
        view.index = [item.model_name for item in view.children].index("smollm2-135m-instruct-q4_1")
        await pilot.press("enter")
        other = resolve_model("smollm2-135m-instruct-q4_1")
        await wait_for(pilot, lambda: app.engine is not None and app.model_path == other, shown=status)
        await wait_for(pilot, lambda: "docs not indexed for this model" in status(), 10, shown=status)
        assert "store store" not in status()
        states, note = await documents_states()
        assert all(s.startswith("not indexed for this model") for s in states), states
        assert "not the loaded model" in note


@pytest.mark.asyncio
async def test_document_states_and_the_indexing_note_during_the_model_pass(tmp_path, monkeypatch):
    """The model pass is held at its second document: F3 shows the first one indexed (committed after
    each document here), the second being read and the third queued; a grounded question asked then
    says in the chat that indexing is still running. Released, every document ends indexed."""
    import threading

    from pydoc_data.topics import topics
    from textual.widgets._toast import Toast

    import sense_local.datastore.indexer as indexer

    monkeypatch.setenv("SENSE_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(indexer.index_paths.__kwdefaults__, "commit_every", 0.0)
    folder = tmp_path / "docs"
    folder.mkdir()
    for t in ("assert", "pass", "del"):
        (folder / f"{t}.txt").write_text(topics[t])
    held, release = threading.Event(), threading.Event()
    real_hidden_states, calls = indexer.document_keys, []

    def document_keys(engine, tokens, **kwargs):
        calls.append(len(tokens))
        if len(calls) == 2:  # the second document waits until the test has looked
            held.set()
            release.wait(120)
        return real_hidden_states(engine, tokens, **kwargs)

    monkeypatch.setattr(indexer, "document_keys", document_keys)
    app = make_app(tmp_path, method="ar", max_tokens=8)
    try:
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: app.chat.session is not None)
            await pilot.press("f3")
            screen = app.screen
            screen.query_one("#folder").value = str(folder)
            await pilot.click("#add")
            table = screen.query_one("#docs-table")
            states = lambda: sorted(str(table.get_row_at(i)[2]) for i in range(table.row_count))  # noqa: E731
            held_states = ["by words only (queued)", "indexed", "reading now (0%)"]
            await wait_for(pilot, lambda: held.is_set() and states() == held_states, 60, shown=states)
            await pilot.press("escape")  # back to the chat, the pass still held
            await send(pilot, app, "What does the pass statement do?")
            await wait_for(pilot, lambda: not app.chat.generating)
            toasts = lambda: [str(t.render()) for t in app.screen.query(Toast)]  # noqa: E731
            await wait_for(pilot, lambda: any("indexing is still running" in t for t in toasts()), 10, shown=toasts)
            assert any("2 documents not yet read by the model" in t for t in toasts()), toasts()
            shown = [t for t in app.screen.query(Toast) if "indexing is still running" in str(t.render())]
            assert shown[0].region.area and app.screen.region.contains_region(shown[0].region)  # on screen
            release.set()
            status = lambda: str(screen.query_one("#index-status").render())  # noqa: E731
            await wait_for(pilot, lambda: status().startswith("done:"), 120, shown=status)
            assert states() == ["indexed"] * 3
    finally:
        release.set()


@pytest.mark.asyncio
async def test_the_live_rate_counts_from_the_first_token_not_from_the_request(tmp_path):
    """A reply whose prompt took long to read: the status bar's tok/s while it streams is the decoding
    rate after its first token, GenerationStats.tok_per_s timed live (what the figures under the
    finished reply say), not tokens over the time since Enter. The reply's batches are posted with
    their own clock; no model generates."""
    from dataclasses import replace

    from sense_local.speculative.types import GenerationStats
    from tui.messages import TokensBatch
    from tui.status import live_stats

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.engine is not None)
        app.chat.generate = lambda messages: None  # the reply below is fed by hand
        await send(pilot, app, "Summarise the long text I pasted.")
        read = GenerationStats("sense", prompt_tokens=4000, tokens=1, forwards=1, t_prefill=40.0)  # a 40 s read
        first = live_stats(read, first_token_at=1000.0, now=1000.0)
        later = live_stats(replace(read, tokens=11, forwards=11), first_token_at=1000.0, now=1001.0)
        assert later.tok_per_s == 10.0 and first.tok_per_s == 0.0  # the runtime's definition, live
        app.chat.post_message(TokensBatch([["The", "target", False]], first, 1000.0))
        app.chat.post_message(TokensBatch([[" x", "target", False]] * 10, later, 1001.0))
        await pilot.pause(0.2)
        status = str(app.query_one("#status").render())
        assert "tok/s 10.0" in status, status


@pytest.mark.asyncio
async def test_a_question_the_manuals_are_not_about_gets_no_sources_on_the_default_model(tmp_path, default_engine):
    """Issue 36 item 3: over ls, grep and chmod pages, "Name three colours." was answered with three
    passages of grep's --colour; the question about grep's colours still gets them."""
    import sense_local as sl
    from man_pages import MAN_PAGES
    from sense_local.datastore import index_paths

    (tmp_path / "docs").mkdir()
    for name, text in MAN_PAGES.items():
        (tmp_path / "docs" / name).write_text(text)
    index_paths(default_engine, tmp_path / "store", [tmp_path / "docs"])
    app = SenseApp(ConversationConfig(model=str(sl.resolve_model("default")), store=str(tmp_path / "store")),
                   sessions=SessionStore(tmp_path / "s.db"), settings=Settings(method="pld", max_tokens=6))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.chat.session is not None and app.store is not None)
        for question, sourced in (("Name three colours.", False), ("How do I make grep show colours?", True)):
            await send(pilot, app, question)
            await wait_for(pilot, lambda: not app.chat.generating, 180)
            reply = replies(app)[-1]
            assert reply.content.strip()
            if sourced:
                assert reply.sources and Path(reply.sources[0]["path"]).name == "grep.txt"
            else:
                assert not reply.sources, reply.sources
