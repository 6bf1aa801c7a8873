"""OpenAI's tool calling on /v1/chat/completions: `tools`, `tool_choice` and `parallel_tool_calls`
checked against the loaded model's chat template, and the calls a reply makes returned as OpenAI
returns them: a message's `tool_calls`, streamed deltas (the call's index, id and name first, then
pieces of its arguments), finish_reason "tool_calls".

tool_choice "auto" lets the model call or answer; "required" and a named function constrain the
reply with a grammar that admits only calls (of that function), so the arguments always parse
(tool_calls.call_grammar); "none" leaves the tools out of the prompt. A model whose template teaches
no call syntax this server reads gets a 400 naming it, never a reply that ignores the tools.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..conversation import Finished
from ..errors import SenseError
from ..speculative.types import TARGET, TokenEvent
from ..tool_calls import ToolCall, ToolRequest, call_grammar, tool_syntax
from ..tool_reader import Piece, ToolCallReader
from .api_error import ApiError
from .openai_api import TurnRequest

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


def parse_tools(body: dict, turn: TurnRequest, engine) -> ToolRequest | None:
    """The request's tools for the loaded model (None: no tools in the prompt). A required or named
    tool_choice sets the turn's grammar. ApiError(400) names the bad field."""
    tools, choice, parallel = body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ApiError(400, f"parallel_tool_calls must be true or false (got {parallel!r})", param="parallel_tool_calls")
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "tools must be a list of {\"type\": \"function\", \"function\": {...}}", param="tools")
    tools = [_tool(t, i) for i, t in enumerate(tools or [])]
    if len({t["function"]["name"] for t in tools}) < len(tools):
        raise ApiError(400, "tools: two tools have the same name", param="tools")
    mode, named = _choice(choice, tools)
    template = engine.meta("tokenizer.chat_template") or ""
    syntax = tool_syntax(template)
    if syntax is None and any(m.get("tool_calls") for m in turn.messages):
        raise ApiError(400, f"messages: the model {engine.path.name} has no tool calls in its chat template, so "
                            "earlier calls cannot be shown to it", param="messages", code="tools_unsupported")
    if mode == "none":
        return None
    if syntax is None:
        raise ApiError(400, f"tools: the model {engine.path.name} has no tool calls in its chat template (a template "
                            "that renders `tools` and shows <tool_call> tags, as Qwen2.5's does); send no tools or "
                            "tool_choice \"none\"", param="tools", code="tools_unsupported")
    request = ToolRequest(tools, syntax, mode, named, True if parallel is None else parallel)
    if mode in ("required", "named"):
        if turn.options.grammar:
            raise ApiError(400, "tool_choice: a required or named tool call cannot also follow response_format; "
                                "send one of them", param="tool_choice")
        chosen = [t for t in tools if mode == "required" or t["function"]["name"] == named]
        try:
            turn.options = turn.options.replace(grammar=call_grammar(chosen, syntax, parallel=request.parallel))
        except SenseError as exc:  # ToolError, or a SchemaError of the converter
            raise ApiError(400, f"tools: {exc}", param="tools", code="unsupported_schema") from None
    elif turn.options.grammar:
        raise ApiError(400, "response_format: a reply held to a format cannot call tools; send tool_choice \"none\" "
                            "or leave response_format out", param="response_format")
    return request


def _tool(tool, i: int) -> dict:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ApiError(400, f'{where} must be {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}',
                       param="tools")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not NAME.match(fn["name"]):
        raise ApiError(400, f"{where}.function.name must be 1 to 64 letters, digits, _ or - (got {fn.get('name')!r})",
                       param="tools")
    if not isinstance(fn.get("description", ""), str):
        raise ApiError(400, f"{where}.function.description must be a string", param="tools")
    params = fn.get("parameters")
    if params is not None and not (isinstance(params, dict) and params.get("type", "object") == "object"):
        raise ApiError(400, f"{where}.function.parameters must be a JSON schema of an object", param="tools")
    if not isinstance(fn.get("strict", False), bool):
        raise ApiError(400, f"{where}.function.strict must be true or false", param="tools")
    out = {"name": fn["name"]}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["parameters"] = params if params is not None else {"type": "object", "properties": {}}
    if fn.get("strict"):
        out["strict"] = True
    return {"type": "function", "function": out}


def _choice(choice, tools: list[dict]) -> tuple[str, str | None]:
    """(mode, the named function) of tool_choice; OpenAI's default: "auto" with tools, else "none"."""
    if choice is None:
        return ("auto" if tools else "none"), None
    if choice in ("none", "auto", "required"):
        if choice == "required" and not tools:
            raise ApiError(400, "tool_choice \"required\" needs tools", param="tool_choice")
        return ("auto" if choice == "auto" and tools else "none" if not tools else choice), None
    fn = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ApiError(400, 'tool_choice must be "none", "auto", "required" or {"type": "function", "function": '
                            '{"name": ...}}', param="tool_choice")
    if name not in {t["function"]["name"] for t in tools}:
        raise ApiError(400, f"tool_choice names {name!r}, which is not among the tools", param="tool_choice")
    return "named", name


# ------------------------------------------------------------------ replies
@dataclass
class CallPieces:
    """Pieces of the calls a reply is writing (tool_calls.Piece), as they can be told apart."""

    pieces: list[Piece]


@dataclass
class ToolFinished(Finished):
    """A reply read for calls: `text` is its content (the text outside calls)."""

    calls: list[ToolCall] = field(default_factory=list)


def read_calls(events: Iterator, request: ToolRequest, cancel: threading.Event | None) -> Iterator:
    """A turn's events with the calls read out: content as TokenEvents, calls as CallPieces, and a
    ToolFinished. Once a reply that may make one call has made it, the rest is not decoded."""
    reader = ToolCallReader(request.syntax, request.names, request.limit)
    for event in events:
        if isinstance(event, TokenEvent):
            yield from _split(event, reader.feed(event.text))
            if reader.done and cancel is not None:
                cancel.set()
        elif isinstance(event, Finished):
            yield from _split(TokenEvent(-1, "", TARGET), reader.finish())
            reason = event.finish_reason
            if reader.calls and (reason == "stop" or reason == "cancelled" and reader.done):
                reason = "tool_calls"
            yield ToolFinished(reader.content, event.stats, reason, calls=reader.calls)
        else:
            yield event


def _split(event: TokenEvent, pieces: list[Piece]) -> Iterator:
    text = "".join(p.text for p in pieces if p.index is None)
    if text or event.token >= 0:
        yield event if text == event.text else dataclasses.replace(event, text=text)
    calls = [p for p in pieces if p.index is not None]
    if calls:
        yield CallPieces(calls)


def add_tool_calls(choice: dict, finished: Finished) -> None:
    """Put a whole reply's calls into its choice's message (content null when there is none)."""
    if isinstance(finished, ToolFinished) and finished.calls:
        message = choice["message"]
        message["tool_calls"] = [c.to_dict() for c in finished.calls]
        message["content"] = message["content"] or None


def call_chunks(head: dict, item: CallPieces) -> Iterator[str]:
    """Streamed chunks (`head`: the chunk envelope) for pieces of calls: the first of a call with
    its index, id, type and name (and empty arguments), the others with pieces of arguments."""
    for piece in item.pieces:
        part: dict = {"index": piece.index}
        if piece.id is not None:
            part.update(id=piece.id, type="function", function={"name": piece.name, "arguments": ""})
        elif piece.arguments:
            part["function"] = {"arguments": piece.arguments}
        else:
            continue
        doc = {**head, "choices": [{"index": 0, "delta": {"tool_calls": [part]}, "logprobs": None,
                                    "finish_reason": None}]}
        yield f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"
