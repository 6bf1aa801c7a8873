"""Tool calls (issue 32): the reader of calls out of a reply (pure, piece by piece), the grammar a
required call decodes under (compiled by llama.cpp), and the server driven by the `openai` client:
the default 1.5B (Qwen2.5-Coder, whose template has <tool_call> tags) calls a tool, streams the call,
and answers from the tool's result; the 135M (no tools in its template) gets a 400 naming it."""
from __future__ import annotations

import json

import jsonschema
import pytest

from sense_local.chat_template import render_chat
from sense_local.speculative.grammar import Grammar
from sense_local.tool_calls import HERMES, call_grammar, tool_syntax
from sense_local.tool_reader import ToolCallReader, read_tool_calls
from test_server import Server, http

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city's name"},
                                                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'


NAMES = {"get_weather", "get_time"}


def fed(text: str, size: int, limit=None):
    """The reader fed `text` in pieces of `size` characters: (pieces, reader)."""
    reader = ToolCallReader(HERMES, NAMES, limit)
    pieces = [p for i in range(0, len(text), size) for p in reader.feed(text[i:i + size])]
    return pieces + reader.finish(), reader


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_a_call_streams_its_name_then_its_arguments(size):
    pieces, reader = fed(CALL, size)
    assert [c.name for c in reader.calls] == ["get_weather"]
    assert reader.calls[0].arguments == '{"city": "Paris", "unit": "celsius"}'
    assert reader.content == "" and not any(p.text for p in pieces)
    head, *args = pieces
    assert head.index == 0 and head.name == "get_weather" and head.id == reader.calls[0].id
    assert "".join(p.arguments for p in args) == reader.calls[0].arguments
    if size < 10:
        assert len(args) > 3  # pieces of the arguments went out as they came, not at the closing tag


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_content_before_and_two_calls(size):
    text = "Let me look that up.\n" + CALL + "\n" + CALL.replace("Paris", "Oslo") + "\n"
    pieces, reader = fed(text, size)
    assert reader.content == "Let me look that up."
    assert "".join(p.text for p in pieces) == reader.content
    assert [json.loads(c.arguments)["city"] for c in reader.calls] == ["Paris", "Oslo"]
    assert [p.index for p in pieces if p.name] == [0, 1]
    assert len({c.id for c in reader.calls}) == 2


def test_a_limit_of_one_call_leaves_the_rest_out_and_says_it_is_done():
    reader = ToolCallReader(HERMES, NAMES, limit=1)
    reader.feed(CALL)
    assert reader.done
    assert reader.feed("\n" + CALL) == []
    assert len(reader.calls) == 1


def test_text_without_calls_is_content_as_it_streams():
    pieces, reader = fed("a < b and <tool is not a tag>\n", 2)
    assert reader.content == "a < b and <tool is not a tag>\n" and not reader.calls
    assert "".join(p.text for p in pieces) == reader.content


FENCED = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'


@pytest.mark.parametrize("size", [1, 4, 1000])
@pytest.mark.parametrize("text", [FENCED, FENCED.replace("```json", "```"), "\n" + FENCED[8:-4] + "\n"],
                         ids=["json-block", "plain-block", "bare"])
def test_a_call_in_a_code_block_or_bare_is_read_when_it_names_a_tool(text, size):
    """Qwen2.5-Coder-1.5B writes its calls so in 'auto' mode; llama.cpp's parser reads them too."""
    pieces, reader = fed(text, size)
    assert reader.content == "" and [c.name for c in reader.calls] == ["get_weather"]
    assert json.loads(reader.calls[0].arguments) == {"city": "Paris"}
    assert "".join(p.arguments for p in pieces) == reader.calls[0].arguments


@pytest.mark.parametrize("size", [1, 3, 1000])
@pytest.mark.parametrize("text", [
    FENCED.replace("get_weather", "get_wet"),  # not one of the tools: an example, say
    "Here:\n```python\nprint({'name': 1})\n```\nDone.",
    '{"answer": 42}',
    '```\n{"x": 1}\n```',
    "Use `ls` then ```` and {braces}.",
])
def test_code_blocks_and_objects_that_are_not_calls_are_content(text, size):
    pieces, reader = fed(text, size)
    assert reader.calls == [] and reader.content == text
    assert "".join(p.text for p in pieces) == text


def test_a_tag_holding_no_call_is_content():
    content, calls = read_tool_calls("<tool_call>\nnot json\n</tool_call>", HERMES)
    assert calls == [] and content == "<tool_call>\nnot json\n</tool_call>"


def test_arguments_first_is_read_whole_at_the_closing_tag():
    content, calls = read_tool_calls('<tool_call>{"arguments": {"zone": "UTC"}, "name": "get_time"}</tool_call>',
                                     HERMES)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_time", {"zone": "UTC"})]


def test_a_call_cut_short_keeps_what_was_written():
    content, calls = read_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', HERMES)
    assert calls[0].name == "get_weather" and calls[0].arguments == '{"city": "Pa'


def test_braces_inside_strings_do_not_end_the_arguments():
    args = '{"q": "a } b { \\" }", "n": [1, {"x": 2}]}'
    content, calls = read_tool_calls(f'<tool_call>\n{{"name": "s", "arguments": {args}}}\n</tool_call>', HERMES)
    assert calls[0].arguments == args and json.loads(calls[0].arguments)["q"] == 'a } b { " }'


def test_the_syntax_is_found_in_templates_that_render_tools(engine, default_engine):
    assert tool_syntax(default_engine.meta("tokenizer.chat_template")) == HERMES
    assert tool_syntax(engine.meta("tokenizer.chat_template")) is None  # SmolLM2: no tools
    prompt = render_chat(default_engine, [{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert '"name": "get_weather"' in prompt and "<tool_call>" in prompt


def test_earlier_calls_and_results_are_rendered_by_the_template(default_engine):
    chat = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                   "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"}]
    prompt = render_chat(default_engine, chat, tools=[WEATHER])
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\n18 C, sunny\n</tool_response>" in prompt


@pytest.mark.parametrize("parallel", [True, False])
def test_the_call_grammar_compiles_and_admits_a_call(default_engine, parallel):
    gbnf = call_grammar([WEATHER, TIME], HERMES, parallel=parallel)
    grammar = Grammar(default_engine, gbnf)
    state = grammar.start()
    text = CALL + ("\n" + CALL.replace("Paris", "Oslo") if parallel else "")
    for token in default_engine.tokenize(text, add_special=False, parse_special=True):
        assert state.allows(token), default_engine.detokenize([token])
        state.accept(token)
    assert state.allows(default_engine.eos_id)  # the reply may end here
    state.close()
    wrong = grammar.start()
    tokens = default_engine.tokenize('<tool_call>\n{"name": "get_date"', add_special=False, parse_special=True)
    allowed = []
    for token in tokens:
        allowed.append(wrong.allows(token))
        if not allowed[-1]:
            break
        wrong.accept(token)
    assert not all(allowed)  # a function that is not among the tools cannot be written
    wrong.close()
    grammar.close()


# ------------------------------------------------------------------ the server on the 1.5B
MESSAGES = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture(scope="module")
def coder():
    s = Server("--model", "default")
    yield s
    s.stop()


def test_a_tool_call_then_the_answer_from_its_result(coder):
    client = coder.client()
    first = client.chat.completions.create(model="x", messages=MESSAGES, tools=[WEATHER, TIME])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert "paris" in args["city"].lower()
    history = [*MESSAGES, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 31, "sky": "clear"}'}]
    # tool_choice "none": answer now (with the tools still offered, the 1.5B calls again, or writes '{{"name"...')
    second = client.chat.completions.create(model="x", messages=history, tools=[WEATHER, TIME], tool_choice="none",
                                            max_tokens=60)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert "31" in second.choices[0].message.content


def test_a_streamed_call_is_the_whole_call_in_openai_deltas(coder):
    client = coder.client()
    whole = client.chat.completions.create(model="x", messages=MESSAGES, tools=[WEATHER, TIME], seed=1)
    chunks = list(client.chat.completions.create(model="x", messages=MESSAGES, tools=[WEATHER, TIME], seed=1,
                                                 stream=True))
    parts = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    head, *rest = parts
    assert head.index == 0 and head.id and head.type == "function" and head.function.name == "get_weather"
    assert all(p.index == 0 and p.id is None and p.function.name is None for p in rest)
    assert len(rest) > 3  # the arguments came in pieces as the model wrote them
    arguments = "".join(p.function.arguments for p in parts)
    assert arguments == whole.choices[0].message.tool_calls[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_a_named_tool_is_called_even_when_not_needed_and_only_once(coder):
    """tool_choice naming a function: the grammar admits only its calls, so the arguments parse
    and match its parameters; parallel_tool_calls false: one call, the reply stopped there."""
    reply = coder.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Say hello."}], tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TIME["function"]["parameters"])


# ------------------------------------------------------------------ the 135M: no tools in its template
@pytest.fixture(scope="module")
def small():
    s = Server()
    yield s
    s.stop()


def test_a_model_without_tools_in_its_template_is_a_clear_400(small):
    r = http("POST", small.base + "/v1/chat/completions", json_body={"messages": MESSAGES, "tools": [WEATHER]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "tools" and error["code"] == "tools_unsupported"
    assert "smollm2" in error["message"].lower()
    ok = http("POST", small.base + "/v1/chat/completions",
              json_body={"messages": MESSAGES, "tools": [WEATHER], "tool_choice": "none", "max_tokens": 4})
    assert ok.status_code == 200 and "tool_calls" not in ok.json()["choices"][0]["message"]


@pytest.mark.parametrize("body, param", [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"functions": [WEATHER["function"]]}, "functions"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": "x"},
                   {"role": "tool", "content": "1"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1"}]}, "messages"),  # the 135M cannot show them
])
def test_bad_tool_fields_are_400s_naming_them(small, body, param):
    r = http("POST", small.base + "/v1/chat/completions", json_body={"messages": MESSAGES, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
