"""What each earlier question of a conversation was grounded with, so that its next turn's prompt
repeats the very tokens already evaluated.

A client sends the history back as it showed it: each earlier question without the passages it
was answered from. Rebuilt that way, the prompt would part from the KV cache at the first earlier
question and everything after it (passages aside, the previous question and answer) would be
evaluated again on every turn. So a turn remembers the message the model actually saw, keyed by the
question and the reply that followed it (what a client sends back, whatever it trimmed before
them), and the next turn puts that message back in its place. Passages already in the context are
then cited by their number instead of being repeated (prompt.grounded_message).

Only text is kept (a few KB per turn), in a bounded LRU; with a `path`, also on disk (one JSON line
per turn, appended; the file is rewritten with the live turns when it holds twice as many), so a
conversation reopened in a later run finds its questions as the model saw them, and its state kept
on disk (kv_disk.py) still matches its prompt.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from .sources import Source

CAPACITY = 512  # grounded turns remembered (LRU)


@dataclass(frozen=True)
class GroundedQuestion:
    content: str  # the user message as the model saw it: instruction, passages, question
    defines: tuple[Source, ...]  # passages whose text this message holds, with their numbers
    refers: tuple[int, ...] = ()  # numbers of passages of earlier messages it cites without repeating them


@dataclass
class Recalled:
    """An earlier conversation with its grounded questions put back."""

    messages: list[dict]  # the history, each remembered question as the model saw it
    in_context: list[Source]  # passages whose text the history holds, in order


class GroundingMemory:
    def __init__(self, capacity: int = CAPACITY, path: Path | None = None):
        self.capacity = capacity
        self.path = path
        self._turns: OrderedDict[tuple[str, str], GroundedQuestion] = OrderedDict()
        self._lines = 0  # lines in the file at `path`
        if path is not None:
            self._load(path)

    def remember(self, question: str, reply: str, grounded: GroundedQuestion) -> None:
        self._add(question, reply, grounded)
        if self.path is not None:
            self._append(question, reply, grounded)

    def _add(self, question: str, reply: str, grounded: GroundedQuestion) -> None:
        key = (question, reply)
        self._turns[key] = grounded
        self._turns.move_to_end(key)
        while len(self._turns) > self.capacity:
            self._turns.popitem(last=False)

    def _load(self, path: Path) -> None:
        """The turns the file holds (a line that does not read, such as one cut by a crash, is skipped)."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return
        for line in lines:
            try:
                t = json.loads(line)
                grounded = GroundedQuestion(t["content"], tuple(Source(**s) for s in t["defines"]), tuple(t["refers"]))
                self._add(t["question"], t["reply"], grounded)
            except (ValueError, KeyError, TypeError):
                continue
        self._lines = len(lines)

    @staticmethod
    def _line(question: str, reply: str, grounded: GroundedQuestion) -> str:
        return json.dumps({"question": question, "reply": reply, "content": grounded.content,
                           "defines": [asdict(s) for s in grounded.defines], "refers": list(grounded.refers)}) + "\n"

    def _append(self, question: str, reply: str, grounded: GroundedQuestion) -> None:
        try:
            if self._lines >= 2 * self.capacity:  # mostly turns dropped or repeated: the live ones only
                tmp = self.path.with_name(self.path.name + ".tmp")
                tmp.write_text("".join(self._line(q, r, g) for (q, r), g in self._turns.items()), encoding="utf-8")
                os.replace(tmp, self.path)
                self._lines = len(self._turns)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(self._line(question, reply, grounded))
            self._lines += 1
        except OSError:  # a full or read-only disk: remembered for this run only
            pass

    def recall(self, history: list[dict], skip: int = 0) -> Recalled:
        """`history` with its remembered questions put back, except the `skip` oldest ones (left as
        sent, to make room). A question citing a passage that is no longer in the context is left as
        sent too, and so is every later one citing it."""
        messages = [dict(m) for m in history]
        in_context: dict[int, Source] = {}
        found = 0
        for i, m in enumerate(history[:-1]):
            after = history[i + 1]
            if m.get("role") != "user" or after.get("role") != "assistant":
                continue
            grounded = self._turns.get((m["content"], after["content"]))
            if grounded is None:
                continue
            self._turns.move_to_end((m["content"], after["content"]))
            found += 1
            if found <= skip or not all(n in in_context for n in grounded.refers):
                continue
            if any(s.number in in_context for s in grounded.defines):  # numbers clash: another conversation's
                continue
            messages[i] = {**m, "content": grounded.content}
            in_context.update((s.number, s) for s in grounded.defines)
        return Recalled(messages, list(in_context.values()))

    def count(self, history: list[dict]) -> int:
        """How many of the history's questions are remembered."""
        return sum(1 for m, after in zip(history, history[1:])
                   if m.get("role") == "user" and after.get("role") == "assistant"
                   and (m["content"], after["content"]) in self._turns)

    def clear(self) -> None:
        self._turns.clear()
