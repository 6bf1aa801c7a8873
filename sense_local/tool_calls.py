"""Tool calls (OpenAI's `tools`) through the model's own chat template.

A template that teaches the model to call tools writes the tool list into the prompt and shows the
syntax of a call; the model then writes calls in that syntax as part of its reply. This module knows
those syntaxes (`ToolSyntax`, found in the template's text), builds the grammar that makes a
required call parse (`call_grammar`), and puts the calls of earlier turns back into the shape
templates render (`template_tool_calls`); tool_reader.py reads calls out of a reply as it streams.

Words. A *call* is one function call the reply makes: a name and its arguments, a JSON object
written as text. *Content* is the reply's text outside calls.
"""
from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass, field

from .errors import SenseError
from .schema_grammar import schema_grammar, unsupported


class ToolError(SenseError):
    """Tools this model or this request cannot serve (a template without tool calls, a strict schema
    the grammar cannot enforce)."""


@dataclass(frozen=True)
class ToolSyntax:
    """How a template's model writes a call: `open` {"name": ..., "arguments": {...}} `close`."""

    name: str
    open: str
    close: str


# Qwen2.5 (and Qwen3, Hermes 2/3, ...) teach <tool_call>{"name": ..., "arguments": ...}</tool_call>.
HERMES = ToolSyntax("hermes", "<tool_call>", "</tool_call>")
SYNTAXES = (HERMES,)


@functools.lru_cache(maxsize=8)
def tool_syntax(template: str) -> ToolSyntax | None:
    """The call syntax a chat template teaches (None: the template renders no tools, or teaches a
    syntax this module does not read). Asked on every chat request: found once per template (Jinja's
    parse of Qwen2.5's took ~7 ms, before the request's prompt was built)."""
    if not template or "tools" not in _template_variables(template):
        return None
    return next((s for s in SYNTAXES if s.open in template and s.close in template), None)


def _template_variables(template: str) -> set[str]:
    import jinja2
    from jinja2 import meta

    try:
        return meta.find_undeclared_variables(jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
                                              .parse(template))
    except jinja2.TemplateError:
        return set()


@dataclass(frozen=True)
class ToolRequest:
    """What a chat request asks of tools: the tools (OpenAI's shape, as the template renders them),
    how the model may call them, and the syntax it writes calls in."""

    tools: list[dict]
    syntax: ToolSyntax
    choice: str = "auto"  # "auto" | "required" | "named" (tool_choice naming one function)
    named: str | None = None  # the function tool_choice names
    parallel: bool = True  # more than one call per reply (parallel_tool_calls)

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}

    @property
    def limit(self) -> int | None:
        """Calls read from one reply at most (None: any number)."""
        return None if self.parallel else 1


@dataclass
class ToolCall:
    name: str
    arguments: str  # the arguments object as the model wrote it (JSON text)
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def to_dict(self) -> dict:
        """OpenAI's shape of a call in a response message."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


# ------------------------------------------------------------------ grammar
def call_grammar(tools: list[dict], syntax: ToolSyntax, *, parallel: bool) -> str:
    """GBNF for a reply that is nothing but calls of `tools` (OpenAI's tool shape), one or (with
    `parallel`) more, each {"name": a tool's name, "arguments": its parameters}. A tool whose
    parameters the grammar cannot enforce gets any JSON object for arguments, unless it is `strict`
    (ToolError naming what)."""
    variants = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        problems = unsupported(params, f"tools[{i}].function.parameters")
        if problems and fn.get("strict"):
            raise ToolError("a strict tool's parameters use what this server cannot enforce: " + "; ".join(problems[:8]))
        variants.append({"type": "object", "properties": {"name": {"const": fn["name"]},
                                                          "arguments": {"type": "object"} if problems else params},
                         "required": ["name", "arguments"]})
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    rules = re.sub(r"(?<![\w-])root(?![\w-])", "call-object", schema_grammar(schema))
    call = f"call ::= {json.dumps(syntax.open + chr(10))} call-object {json.dumps(chr(10) + syntax.close)}"
    root = 'root ::= call ("\\n" call)*' if parallel else "root ::= call"
    return "\n".join((root, call, rules))


# ------------------------------------------------------------------ history
def template_tool_calls(calls: list[dict]) -> list[dict]:
    """Earlier calls (OpenAI's shape, arguments as JSON text) as chat templates render them: the
    arguments an object (templates write it with `tojson`); text that is not JSON is kept as text."""
    out = []
    for call in calls:
        fn = call["function"]
        try:
            args = json.loads(fn["arguments"])
        except ValueError:
            args = fn["arguments"]
        out.append({"id": call.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out
