"""Reading a reply's tool calls as it streams (tool_calls.py has the syntaxes and the call type).

A call is a JSON object {"name": ..., "arguments": {...}} that the model wraps in its template's tags
(<tool_call>...</tool_call>). Small models also write it in a ```json code block, or as the bare
object for the whole reply (Qwen2.5-Coder-1.5B does both); llama.cpp's chat parser reads those too,
and so does this reader, where the name is one of the request's tools (a code block holding other
JSON is content). The arguments stream as they are written when the name comes first (as templates
show it); a tagged call written otherwise comes whole at its closing tag.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .tool_calls import ToolCall, ToolSyntax


@dataclass
class Piece:
    """One piece of a reply read as it streams: content text, or a part of call `index` (its id
    and name with the first part, then pieces of its arguments text)."""

    text: str = ""
    index: int | None = None
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Opening:
    """Where a call may begin: `open` (kept when `inside`: it is the call's own first character),
    ending at `close` ("" : with the call's object); `known_only`: only a call of one of the tools
    counts (code blocks and bare objects may be anything); `at_start`: only where the reply begins."""

    open: str
    close: str
    known_only: bool = False
    at_start: bool = False
    inside: bool = False


FENCE = Opening("```", "```", known_only=True)
BARE = Opening("{", "", known_only=True, at_start=True, inside=True)
YES, WAIT, NO = "yes", "wait", "no"
_HEAD = (None, "{", None, '"name"', None, ":", None, str, None, ",", None, '"arguments"', None, ":", None)


class ToolCallReader:
    """Reads calls out of a reply fed piece by piece; `feed` and `finish` return the pieces that can
    be told apart so far. `names`: the request's tools. With `limit`, calls after the limit-th are
    left out (`done` is then true: the rest of the reply is not needed). Whitespace between and after
    calls is not content."""

    def __init__(self, syntax: ToolSyntax, names: set[str] | None = None, limit: int | None = None):
        self.names, self.limit = names, limit
        self.openings = (Opening(syntax.open, syntax.close), FENCE, BARE)
        self.calls: list[ToolCall] = []
        self.content = ""  # the content given out so far
        self._buf = ""  # text not yet given out
        self._state = "text"  # text | head | args | tail | done
        self._at: Opening | None = None  # the opening of the call being read
        self._held = ""  # whitespace content held back: dropped if a call follows
        self._started = False  # the reply has begun (a bare object no longer counts)
        self._scan = JsonScan()

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, text: str) -> list[Piece]:
        if self._state == "done":
            return []
        self._buf += text
        out: list[Piece] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[Piece]:
        """The end of the reply: what is left given out (a call cut short ends where it was cut)."""
        out: list[Piece] = []
        state, buf, at = self._state, self._buf, self._at
        self._buf = ""
        if state == "text":
            self._write(buf, out, final=True)
        elif state == "head":  # no header yet: the whole call, if it is one, else content
            call = whole_call(buf if at.inside else _language(buf)[1] if at is FENCE else buf)
            if call is not None and self._known(call.name, at):
                self._add_whole(call, out)
            else:
                self._write(buf if at.inside else at.open + buf, out, final=True)
        elif state == "args":
            out.append(Piece(index=len(self.calls) - 1, arguments=buf))
            self.calls[-1].arguments += buf
        self._state = "done"
        return out

    # -------------------------------------------------------------- states
    def _step(self, out: list[Piece]) -> bool:
        """Move on as far as the buffer allows; whether a state changed (so try again)."""
        return getattr(self, "_" + self._state)(out) if self._state != "done" else False

    def _text(self, out: list[Piece]) -> bool:
        buf = self._buf
        found = [(buf.find(o.open), o) for o in self.openings if not (o.at_start and self._started)]
        found = [(at, o) for at, o in found if at >= 0 and (not o.at_start or not buf[:at].strip())]
        if not found:
            keep = max(_partial_suffix(buf, o.open) for o in self.openings)
            if not (self._started or buf.strip()):
                keep = len(buf)  # nothing but whitespace yet: a bare object may still come
            self._write(buf[: len(buf) - keep], out)
            self._buf = buf[len(buf) - keep:]
            return False
        at, opening = min(found, key=lambda f: f[0])
        self._write(buf[:at], out, before_call=True)
        self._buf = buf[at if opening.inside else at + len(opening.open):]
        self._state, self._at = "head", opening
        return True

    def _head(self, out: list[Piece]) -> bool:
        at, buf = self._at, self._buf
        if at is FENCE:
            verdict, start = _language(buf)
            head = (verdict, None, 0) if verdict != YES else _match_head(start)
            offset = len(buf) - len(start)
        else:
            head, offset = _match_head(buf), 0
        verdict, name, end = head
        if verdict == YES and self._known(name, at):
            self._held = ""
            self.calls.append(ToolCall(name, ""))
            out.append(Piece(index=len(self.calls) - 1, id=self.calls[-1].id, name=name))
            self._buf, self._state, self._scan = buf[offset + end:], "args", JsonScan()
            return True
        if verdict == WAIT:
            return False
        if at.known_only:  # not a call after all: its opening is content, and the rest is read again
            self._started = True
            if not at.inside:
                self._write(at.open, out)
            self._state = "text"
            return True
        close = buf.find(at.close)  # a tag holding something else: read whole at its closing tag
        if close < 0:
            return False
        call = whole_call(buf[:close])
        if call is None:  # not a call: the tag and what it holds are content
            self._write(at.open + buf[: close + len(at.close)], out)
        else:
            self._add_whole(call, out)
        self._buf = buf[close + len(at.close):]
        self._after_call()
        return True

    def _args(self, out: list[Piece]) -> bool:
        buf = self._buf
        if not self._scan.started:  # whitespace before the arguments is not theirs
            buf = self._buf = buf.lstrip()
        used = self._scan.feed(buf)
        if used:
            out.append(Piece(index=len(self.calls) - 1, arguments=buf[:used]))
            self.calls[-1].arguments += buf[:used]
        self._buf = buf[used:]
        if not self._scan.closed:
            return False
        self._state = "tail"
        return True

    def _tail(self, out: list[Piece]) -> bool:
        """The call's closing brace and tag: not given out."""
        close = self._at.close or "}"
        end = self._buf.find(close)
        if end < 0:
            return False
        self._buf = self._buf[end + len(close):]
        self._after_call()
        return True

    def _after_call(self) -> None:
        self._started = True
        self._state = "done" if self.limit is not None and len(self.calls) >= self.limit else "text"
        if self._state == "done":
            self._buf = ""

    def _known(self, name: str, at: Opening) -> bool:
        return not at.known_only or self.names is None or name in self.names

    def _add_whole(self, call: ToolCall, out: list[Piece]) -> None:
        self._held = ""
        self.calls.append(call)
        out.append(Piece(index=len(self.calls) - 1, id=call.id, name=call.name))
        out.append(Piece(index=len(self.calls) - 1, arguments=call.arguments))

    def _write(self, text: str, out: list[Piece], *, before_call: bool = False, final: bool = False) -> None:
        """Give out content (whitespace is held until it is known whether a call follows)."""
        text = self._held + text
        self._held = ""
        if before_call:  # its trailing whitespace goes if a call follows, else comes back with what does
            kept = text.rstrip()
            text, self._held = kept, text[len(kept):]
        elif final and self.calls:
            text = text.rstrip()
        elif not text.strip() and not final:
            self._held = text
            return
        if text:
            self._started = True
            self.content += text
            out.append(Piece(text=text))


def _match_head(buf: str) -> tuple[str, str | None, int]:
    """Whether `buf` begins {"name": "...", "arguments": : (YES, the name, where the arguments
    begin), (WAIT, None, 0) while it may, (NO, None, 0) once it cannot."""
    i, name = 0, None
    for step in _HEAD:
        if step is None:  # whitespace
            while i < len(buf) and buf[i].isspace():
                i += 1
        elif step is str:
            if i >= len(buf):
                return WAIT, None, 0
            if buf[i] != '"':
                return NO, None, 0
            j = i + 1
            while j < len(buf) and buf[j] != '"':
                j += 2 if buf[j] == "\\" else 1
            if j >= len(buf):
                return WAIT, None, 0
            try:
                name = json.loads(buf[i:j + 1])
            except ValueError:
                return NO, None, 0
            i = j + 1
        else:
            part = buf[i:i + len(step)]
            if part != step[:len(part)]:
                return NO, None, 0
            if len(part) < len(step):
                return WAIT, None, 0
            i += len(step)
    return YES, name, i


def _language(buf: str) -> tuple[str, str]:
    """A code block's language word (none, or json) and line end: (YES, the text after them),
    (WAIT, "") while it may still be json, (NO, "") for another language."""
    word = buf.split("\n", 1)[0] if "\n" in buf else None
    if word is None:
        return (WAIT, "") if "json".startswith(buf.strip().lower()) else (NO, "")
    return (YES, buf[len(word) + 1:]) if word.strip().lower() in ("", "json") else (NO, "")


class JsonScan:
    """Finds where one JSON value written as text ends (strings, escapes, nesting), fed in pieces."""

    def __init__(self):
        self.depth, self.in_string, self.escape, self.started, self.closed = 0, False, False, False, False

    def feed(self, text: str) -> int:
        """How many characters of `text` belong to the value (all of them while it is open)."""
        for i, ch in enumerate(text):
            if self.closed:
                return i
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    self.closed = self.depth == 0
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                self.closed = self.depth <= 0
            elif self.depth == 0 and ch in ",\n":  # a bare number or literal ended
                self.closed = True
                return i
        return len(text)


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of `text` that begins `tag` (held back: a tag may be coming)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def whole_call(text: str) -> ToolCall | None:
    """A call written whole ({"name": ..., "arguments": ...} in any order), or None."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return ToolCall(obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))


def read_tool_calls(text: str, syntax: ToolSyntax, names: set[str] | None = None,
                    limit: int | None = None) -> tuple[str, list[ToolCall]]:
    """(content, calls) of a whole reply."""
    reader = ToolCallReader(syntax, names, limit)
    reader.feed(text)
    reader.finish()
    return reader.content, reader.calls
