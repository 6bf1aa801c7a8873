"""The server's request checks and error shapes, without a model: the cheapest tests that can fail.
The served behaviour itself is tested on the real model in test_server.py and test_ollama_api.py."""
from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sense_local.generation import GenerationOptions
from sense_local.schema_grammar import unsupported
from sense_local.server.api_error import ApiError
from sense_local.server.error_replies import OLLAMA, OPENAI, exception_handlers, shape_of
from sense_local.server.fields import json_object, number, string_field, typed
from sense_local.server.infill import parse_infill
from sense_local.server.ollama_api import parse_generate
from sense_local.server.openai_api import parse_turn

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def refused(parse, *args, **kw) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(*args, **kw)
    return caught.value


def test_fields():
    assert json_object({"a": 1}) == {"a": 1}
    assert refused(json_object, [1]).message == "the request body must be a JSON object"
    assert string_field({}, "suffix") == "" and string_field({"suffix": None}, "suffix") == ""
    assert string_field({"suffix": ")"}, "suffix") == ")"
    bad = refused(string_field, {"suffix": 3}, "suffix")
    assert (bad.status, bad.message, bad.param) == (400, "suffix must be a string (got int)", "suffix")
    assert typed({}, "n", int, 1) == 1 and typed({"n": None}, "n", int, 1) == 1
    assert refused(typed, {"n": True}, "n", int, 1).message == "n must be of type int (got True)"
    assert number({"top_p": 0.5}, "top_p", 1.0) == 0.5 and number({"top_p": 1}, "top_p", 1.0) == 1
    assert refused(number, {"top_k": 1.5}, "top_k", 0).message == "top_k must be a whole number (got 1.5)"
    assert refused(number, {"top_p": "x"}, "top_p", 1.0).message == "top_p must be a number (got 'x')"


def test_parse_turn_reads_the_sampling_fields():
    turn = parse_turn({**CHAT, "max_completion_tokens": 7, "temperature": 1, "seed": 2**32 + 5, "stop": "END",
                       "top_k": 3, "stream": True, "stream_options": {"include_usage": True}},
                      "chat", GenerationOptions(), 2048)
    o = turn.options
    assert (o.max_tokens, o.temperature, o.seed, o.stop, o.top_k) == (7, 1.0, 5, ("END",), 3)
    assert isinstance(o.temperature, float)
    assert turn.stream and turn.include_usage and turn.messages == [{"role": "user", "content": "hi"}]
    fixed = parse_turn(CHAT, "chat", GenerationOptions(seed=11), 2048, fixed_seed=True)
    assert fixed.options.seed == 11


def test_parse_turn_names_the_first_bad_field_in_order():
    defaults = GenerationOptions()
    cases = [  # two bad fields each: the one checked first is named
        ({**CHAT, "n": 2, "max_tokens": 0}, "n"),
        ({**CHAT, "max_tokens": 0, "temperature": 9}, "max_tokens"),
        ({**CHAT, "temperature": 9, "seed": "x"}, "temperature"),
        ({**CHAT, "seed": "x", "stop": 5}, "seed"),
        ({**CHAT, "stop": 5, "method": 3}, "stop"),
        ({**CHAT, "method": 3, "grounded": 1}, "method"),
        ({**CHAT, "grounded": 1, "prediction": 1}, "grounded"),
        ({**CHAT, "prediction": 1, "response_format": 1}, "prediction"),
        ({**CHAT, "response_format": 1, "best_of": 2}, "response_format"),
        ({**CHAT, "best_of": 2, "top_k": 0.5}, "best_of"),
        ({**CHAT, "top_k": 0.5, "top_logprobs": 2}, "top_k"),
        ({**CHAT, "top_logprobs": 2, "messages": []}, "top_logprobs"),
        ({**CHAT, "method": "nope"}, "method"),
    ]
    for body, param in cases:
        error = refused(parse_turn, body, "chat", defaults, 2048)
        assert (error.status, error.param) == (400, param), (body, error.message)


def test_completion_fields():
    defaults = GenerationOptions()
    turn = parse_turn({"prompt": "def f(", "suffix": ")"}, "completion", defaults, 2048)
    assert (turn.prompt, turn.infill.prefix, turn.infill.suffix, turn.echo) == ("def f(", "def f(", ")", False)
    assert parse_turn({"prompt": ["x"], "echo": True}, "completion", defaults, 2048).echo
    assert parse_turn({"suffix": ")"}, "completion", defaults, 2048).prompt == ""
    assert refused(parse_turn, {"prompt": "x", "suffix": 3}, "completion", defaults, 2048).param == "suffix"
    assert refused(parse_turn, {"prompt": ""}, "completion", defaults, 2048).param == "prompt"
    assert refused(parse_turn, {"prompt": "x", "echo": True, "logprobs": 1}, "completion", defaults, 2048).param == "echo"


def test_infill_and_ollama_read_string_fields_alike():
    defaults = GenerationOptions()
    turn = parse_infill({"input_prefix": "a", "input_suffix": None, "n_predict": 4}, defaults, 2048)
    assert (turn.infill.prefix, turn.infill.suffix, turn.options.max_tokens) == ("a", "", 4)
    for parse, body, key in ((parse_infill, {"input_prefix": 3}, "input_prefix"),
                             (parse_generate, {"model": "m", "suffix": 3}, "suffix")):
        error = refused(parse, body, defaults, 2048)
        assert error.message == f"{key} must be a string (got int)" and error.param == key
    assert refused(parse_generate, [], defaults, 2048).message == "the request body must be a JSON object"


def test_error_shapes():
    error = ApiError(404, "no such model", type="not_found_error", param="model", code="model_not_found")
    assert OPENAI.body(error) == {"error": {"message": "no such model", "type": "not_found_error", "param": "model",
                                            "code": "model_not_found"}}
    assert OLLAMA.body(error) == {"error": "no such model"}
    assert shape_of("/api/chat") is OLLAMA and shape_of("/v1/chat/completions") is OPENAI and shape_of("/api") is OPENAI


def test_one_set_of_handlers_answers_in_either_shape():
    async def api_error(request):
        raise ApiError(503, "busy", type="server_error", code="queue_full", headers={"Retry-After": "5"})

    async def crash(request):
        raise RuntimeError("boom")

    def routes():
        return [Route("/busy", api_error, methods=["GET"]), Route("/crash", crash, methods=["GET"])]

    ollama = Starlette(routes=routes(), exception_handlers=exception_handlers(OLLAMA))
    app = Starlette(routes=[*routes(), Mount("/api", app=ollama)], exception_handlers=exception_handlers(OPENAI))
    with TestClient(app, raise_server_exceptions=False) as client:
        busy = client.get("/busy")
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        assert busy.json() == {"error": {"message": "busy", "type": "server_error", "param": None, "code": "queue_full"}}
        assert client.get("/api/busy").json() == {"error": "busy"}
        assert client.get("/api/busy").headers["retry-after"] == "5"
        assert client.get("/crash").json()["error"] == {"message": "internal error: RuntimeError: boom",
                                                        "type": "server_error", "param": None, "code": None}
        assert client.get("/api/crash").json() == {"error": "internal error: RuntimeError: boom"}
        missing = client.get("/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        assert missing.json()["error"]["message"] == "Not Found"
        assert client.get("/api/nowhere").json() == {"error": "not found"}
        wrong = client.post("/api/busy")
        assert wrong.status_code == 405 and wrong.json() == {"error": "method not allowed"}
        assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD"}
        assert client.post("/busy").json()["error"]["type"] == "invalid_request_error"


def test_unsupported_schema_parts_exactly():
    assert unsupported({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}) == []
    assert unsupported(3) == ["#: a schema must be an object (got 3)"]
    assert unsupported({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1}}, "not": {}}) == [
        "#: 'not' not supported here", "#/properties/a: 'minimum' not supported here"]
    assert unsupported({"anyOf": "x", "title": "t"}) == ["#/anyOf: must be a non-empty list"]
    assert unsupported({"$ref": "http://x", "type": "object"}) == [
        "#: 'type' not supported here", "#: only local $ref (#/$defs/...) is supported"]
    assert unsupported({"type": "string", "pattern": "a", "format": "date"}) == [
        "#: 'format' not supported here", "#/pattern: must be anchored as ^...$"]
    assert unsupported({"type": "string", "format": "email"}) == [
        "#/format: 'email' not supported (supported: date, date-time, time, uuid, uuid1, uuid2, uuid3, uuid4, uuid5)"]
    assert unsupported({"type": "array", "items": {"type": "nope"}, "uniqueItems": True}) == [
        "#: 'uniqueItems' not supported here", "#/items/type: unknown type 'nope'"]
    assert unsupported({"type": ["string", "date"], "$defs": {"d": {"enum": []}}}) == [
        "#/$defs/d/enum: must be a non-empty list", "#/type: unknown type 'date'"]
    assert unsupported({"allOf": [{"$ref": "#/$defs/a"}, {"properties": {"b": {"const": 1, "x": 2}}}, 5]}) == [
        "#/allOf/1/properties/b: 'x' not supported here", "#/allOf/2: allOf parts must be $refs or objects of properties"]
    assert unsupported({"properties": [1], "required": ["a"]}) == ["#/properties: must be an object"]
    assert unsupported({"properties": {}, "required": ["a"], "additionalProperties": 3}) == [
        "#/required: must list names of its properties", "#/additionalProperties: must be a boolean or a schema"]
