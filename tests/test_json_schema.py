"""Structured output (issue 32): response_format json_schema through the `openai` client on the
135M. Twenty schemas (nested objects, arrays, enums, numbers, booleans, optional fields, $ref, const,
unions, formats, patterns): every reply validates and ends with finish_reason "stop", streamed or
whole; `pld` and `sense` write `ar`'s text under the same grammar, or part from it only at a near-tie
of the grammar-masked logits (tests/test_lossless.py's rule), checked on the engine."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from conftest import chat
from sense_local.bench.runner import NEAR_TIE
from sense_local.generation import GenerationOptions, make_decoder
from sense_local.schema_grammar import schema_grammar
from sense_local.speculative.grammar import Grammar
from test_server import Server, http

S = {"type": "string", "maxLength": 40}  # strings a small model cannot run on with forever
CASES = [
    ("person", "Invent a person with a name and an age.",
     {"type": "object", "properties": {"name": S, "age": {"type": "integer"}}, "required": ["name", "age"]}),
    ("book", "Describe a famous book.",
     {"type": "object", "properties": {"title": S, "author": S, "year": {"type": "integer"},
                                       "in_print": {"type": "boolean"}},
      "required": ["title", "author", "year", "in_print"]}),
    ("colour", "What colour is the sky?",
     {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue", "grey"]}}, "required": ["colour"]}),
    ("point", "Give a point in the plane with x and y coordinates.",
     {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}),
    ("todo", "List up to three things to do today.",
     {"type": "object", "properties": {"items": {"type": "array", "items": S, "maxItems": 3}}, "required": ["items"]}),
    ("user", "Make up a user account.",
     {"type": "object", "properties": {
         "user": {"type": "object", "properties": {"name": S, "email": S}, "required": ["name", "email"]},
         "active": {"type": "boolean"}}, "required": ["user", "active"]}),
    ("optional", "Name a city.",
     {"type": "object", "properties": {"city": S, "country": S}, "required": ["city"]}),
    ("people", "Name two people and their ages.",
     {"type": "object", "properties": {"people": {"type": "array", "maxItems": 2, "items": {
         "type": "object", "properties": {"name": S, "age": {"type": "integer"}}, "required": ["name", "age"]}}},
      "required": ["people"]}),
    ("rating", "Rate the film Casablanca from 1 to 5.",
     {"type": "object", "properties": {"rating": {"enum": [1, 2, 3, 4, 5]}, "film": S}, "required": ["rating", "film"]}),
    ("prime", "Is 7 a prime number?",
     {"type": "object", "properties": {"is_prime": {"type": "boolean"}}, "required": ["is_prime"]}),
    ("fruit", "Name a fruit.",
     {"type": "object", "properties": {"kind": {"const": "fruit"}, "name": S}, "required": ["kind", "name"]}),
    ("nullable", "What is the capital of France? Answer null if unknown.",
     {"type": "object", "properties": {"answer": {"anyOf": [S, {"type": "null"}]}}, "required": ["answer"]}),
    ("date", "On what date did the first Moon landing happen?",
     {"type": "object", "properties": {"date": {"type": "string", "format": "date"}}, "required": ["date"]}),
    ("pair", "Give a number and a word.",
     {"type": "object", "properties": {"pair": {"type": "array", "prefixItems": [{"type": "number"}, S]}},
      "required": ["pair"]}),
    ("company", "Invent a company with its address.",
     {"type": "object", "properties": {"company": {"type": "object", "properties": {
         "name": S, "address": {"type": "object", "properties": {"street": S, "zip": S},
                                "required": ["street", "zip"]}}, "required": ["name", "address"]}},
      "required": ["company"]}),
    ("airport", "Give the three-letter code of an airport.",
     {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}}, "required": ["code"]}),
    ("primes", "List the first few prime numbers.",
     {"type": "object", "properties": {"primes": {"type": "array", "items": {"type": "integer"},
                                                  "minItems": 3, "maxItems": 5}}, "required": ["primes"]}),
    ("pets", "Describe up to two pets.",
     {"type": "object", "$defs": {"pet": {"type": "object", "properties": {
         "name": S, "species": {"enum": ["cat", "dog", "fish"]}}, "required": ["name", "species"]}},
      "properties": {"pets": {"type": "array", "items": {"$ref": "#/$defs/pet"}, "maxItems": 2}}, "required": ["pets"]}),
    ("value", "Give the answer to life, the universe and everything.",
     {"type": "object", "properties": {"value": {"type": ["integer", "string"]}}, "required": ["value"]}),
    ("recipe", "Write a short pancake recipe.",
     {"type": "object", "additionalProperties": False, "properties": {
         "name": S, "servings": {"type": "integer"}, "vegetarian": {"type": "boolean"},
         "ingredients": {"type": "array", "items": S, "maxItems": 4}},
      "required": ["name", "servings", "vegetarian", "ingredients"]}),
]
MAX_TOKENS = 300


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


def ask(server, prompt: str, schema: dict, **kw):
    return server.client().chat.completions.create(
        model="test", messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}, **kw)


def masked_gap(engine, prompt: list[int], gbnf: str, emitted: list[int]) -> float:
    """The top-2 gap of the logits after `emitted`, masked by the grammar state there."""
    out = engine.prefill(prompt + emitted, outputs="last")
    grammar = Grammar(engine, gbnf)
    state = grammar.start()
    for token in emitted:
        state.accept(token)
    row = np.sort(state.mask(np.asarray(out.logits[-1], dtype=np.float32)))
    state.close()
    grammar.close()
    return float(row[-1] - row[-2])


def decoded(engine, prompt: list[int], gbnf: str, method: str) -> list[int]:
    options = GenerationOptions(method=method, max_tokens=MAX_TOKENS, grammar=gbnf)
    return [e.token for e in make_decoder(engine, options).generate(prompt, MAX_TOKENS) if e.token >= 0]


@pytest.mark.parametrize("name, prompt, schema", CASES, ids=[c[0] for c in CASES])
def test_every_method_writes_a_valid_reply_and_ar_s_text(server, engine, name, prompt, schema):
    replies = {m: ask(server, prompt, schema, extra_body={"method": m}) for m in ("ar", "pld", "sense")}
    for method, reply in replies.items():
        assert reply.choices[0].finish_reason == "stop", (method, reply.choices[0].message.content)
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
        assert reply.model_extra["sense"]["method"] == method
    texts = {m: r.choices[0].message.content for m, r in replies.items()}
    if texts["pld"] == texts["ar"] and texts["sense"] == texts["ar"]:
        return
    # a difference must be a near-tie under the grammar: found on the engine, token by token
    gbnf, tokens = schema_grammar(schema), chat(engine, prompt)
    ar = decoded(engine, tokens, gbnf, "ar")
    for method in ("pld", "sense"):
        if texts[method] == texts["ar"]:
            continue
        other = decoded(engine, tokens, gbnf, method)
        at = next((i for i, (a, b) in enumerate(zip(ar, other)) if a != b), None)
        assert at is not None, (method, texts[method], texts["ar"])
        assert masked_gap(engine, tokens, gbnf, ar[:at]) < NEAR_TIE, (method, at)


def test_twenty_different_schemas():
    assert len(CASES) == 20 and len({json.dumps(s, sort_keys=True) for _, _, s in CASES}) == 20


@pytest.mark.parametrize("method", ["ar", "pld"])
def test_a_streamed_reply_is_the_whole_one_and_ends_with_stop(server, method):
    name, prompt, schema = CASES[1]
    whole = ask(server, prompt, schema, extra_body={"method": method})
    chunks = list(ask(server, prompt, schema, extra_body={"method": method}, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    jsonschema.validate(json.loads(text), schema)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_json_object_gives_an_object_where_the_prompt_asks_for_nothing(server):
    reply = server.client().chat.completions.create(
        model="test", messages=[{"role": "user", "content": "Tell me about cats."}], max_tokens=MAX_TOKENS,
        response_format={"type": "json_object"})
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


@pytest.mark.parametrize("schema, where", [
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}, "#/properties/n"),
    ({"type": "object", "properties": {"e": {"type": "string", "format": "email"}}}, "#/properties/e/format"),
    ({"type": "object", "properties": {"s": {"type": "strange"}}}, "#/properties/s/type"),
])
def test_a_schema_the_grammar_cannot_enforce_is_a_400_naming_where(server, schema, where):
    r = http("POST", server.base + "/v1/chat/completions", json_body={
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    assert where in r.json()["error"]["message"]
