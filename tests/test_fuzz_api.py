"""Property-based requests (hypothesis) against a real `sense-local serve` on the 135M: every route
(OpenAI's and Ollama's), JSON of every shape and size and of wrong types, raw bytes, headers and
methods. Whatever comes in, the server answers within the request timeout, never with a 500, and
every error is in its API's shape (OpenAI's; Ollama's on /api/*; a 503 only with Retry-After). Derandomized with a fixed budget (CASES), so a CI run is
repeatable; most cases fail validation, and a valid body never asks for more than 3 tokens.
"""
from __future__ import annotations

import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from served import ServeProcess

CASES = 2000
REQUEST_TIMEOUT = 60.0  # seconds without a byte from the server counts as a hang
MAX_TOKENS = 3  # the most a generated valid body asks for (and the server's default)

# ---------------------------------------------------------------------------------------- values
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.integers(min_value=10**20, max_value=10**40) | st.sampled_from(["", "\x00", "\ud7ff", "é" * 3]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
big_strings = st.sampled_from(["word " * 20_000, "\n" * 5_000, "<|im_start|>" * 200, "{" * 3_000])


def either(good):
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(good, good, good, json_values)


small_counts = st.integers(min_value=1, max_value=MAX_TOKENS)
bad_counts = st.integers(max_value=0) | st.integers(min_value=10**6) | st.floats() | st.text(max_size=4)
counts = st.one_of(small_counts, small_counts, bad_counts, st.none())
text = st.text(max_size=40) | big_strings
parts = st.lists(st.fixed_dictionaries({"type": either(st.just("text")), "text": either(text)}), max_size=3)
message = st.fixed_dictionaries(
    {"role": either(st.sampled_from(["user", "assistant", "system", "developer", "tool", "wizard"]))},
    optional={"content": either(text | parts), "name": json_values})
messages = either(st.lists(message, min_size=1, max_size=4).map(lambda ms: ms + [{"role": "user", "content": "hi"}])
                  | st.lists(message, max_size=5))
schemas = st.sampled_from([{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                           {"type": "string", "format": "email"}, {"type": "array", "minItems": 2},
                           {"$ref": "#/nowhere"}, {"type": "nonsense"}, {"enum": []}, {"anyOf": [{}, {"type": 3}]}])
response_format = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "yaml"])}),
    st.fixed_dictionaries({"type": st.just("json_schema"),
                           "json_schema": st.fixed_dictionaries({"name": st.just("x")}, optional={"schema": schemas | json_values})}),
    json_values)
sampling = {
    "model": either(st.sampled_from(["test", "default", "gpt-4", "smollm2-135m-instruct-q8_0"])),
    "max_tokens": counts, "max_completion_tokens": counts,
    "temperature": either(st.floats(min_value=-1, max_value=3)), "top_p": either(st.floats(0, 1)),
    "top_k": either(st.integers(-2, 50)), "min_p": either(st.floats(0, 1)), "seed": either(st.integers()),
    "stop": either(st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=6)),
    "stream": either(st.booleans()), "stream_options": either(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "n": either(st.integers(0, 3)), "method": either(st.sampled_from(["ar", "pld", "sense", "nope"])),
    "grounded": either(st.booleans()), "presence_penalty": either(st.floats(-2, 2)),
    "frequency_penalty": either(st.floats(-2, 2)), "logprobs": json_values, "top_logprobs": json_values,
    "logit_bias": json_values, "tools": json_values, "user": json_values,
    "response_format": response_format, "prediction": either(st.fixed_dictionaries({"type": st.just("content"),
                                                                                    "content": text})),
}
BODIES = {
    "/v1/chat/completions": st.fixed_dictionaries({}, optional={"messages": messages, **sampling}),
    "/v1/completions": st.fixed_dictionaries({}, optional={"prompt": either(text | st.lists(text, max_size=2)),
                                                           "suffix": either(text), "echo": json_values, **sampling}),
    "/infill": st.fixed_dictionaries({}, optional={
        "input_prefix": either(text), "input_suffix": either(text), "prompt": either(text),
        "input_extra": either(st.lists(st.fixed_dictionaries({"filename": either(text), "text": either(text)}),
                                       max_size=3)),
        "n_predict": either(st.sampled_from([-1, 1, 2, 3])), **sampling}),
    "/v1/embeddings": st.fixed_dictionaries({}, optional={
        "input": either(st.text(min_size=1, max_size=40) | st.lists(st.text(max_size=20), max_size=4)
                        | st.lists(st.integers(-5, 40_000), max_size=8)
                        | st.lists(st.lists(st.integers(0, 30_000), max_size=4), max_size=3)),
        "model": json_values, "encoding_format": either(st.sampled_from(["float", "base64", "hex"])),
        "dimensions": either(st.sampled_from([384, 128, 0])), "user": json_values}),
}
ollama_names = either(st.sampled_from(["test", "smollm2-135m-instruct-q8_0", "llama3.2:latest", ""]))
ollama_options = either(st.fixed_dictionaries({}, optional={
    "num_predict": st.sampled_from([1, 2, 3, 0, -3, 10**6, 1.5, "3"]), "temperature": either(st.floats(0, 2)),
    "seed": either(st.integers()), "stop": either(st.lists(st.text(max_size=4), max_size=3)),
    "num_ctx": json_values, "repeat_penalty": either(st.sampled_from([1, 1.1])), "mirostat": json_values,
    "top_k": either(st.integers(0, 50)), "bogus": json_values}))
ollama_common = {"model": ollama_names, "stream": either(st.booleans()), "options": ollama_options,
                 "format": either(st.sampled_from(["json", "", "yaml"]) | schemas),
                 "keep_alive": either(st.sampled_from(["5m", 0, -1, "forever", "1h30m"])),
                 "method": either(st.sampled_from(["ar", "pld", "nope"])), "grounded": either(st.booleans())}
BODIES.update({  # Ollama's API on the same port (sense_local/server/ollama_api.py)
    "/api/chat": st.fixed_dictionaries({}, optional={"messages": messages, "tools": json_values, **ollama_common}),
    "/api/generate": st.fixed_dictionaries({}, optional={
        "prompt": either(text), "suffix": either(text), "system": either(text), "raw": either(st.booleans()),
        "template": json_values, "images": json_values, "context": json_values, **ollama_common}),
    "/api/embed": st.fixed_dictionaries({}, optional={
        "model": ollama_names, "input": BODIES["/v1/embeddings"].map(lambda b: b.get("input", "")),
        "truncate": either(st.booleans()), "options": ollama_options, "keep_alive": json_values}),
    "/api/embeddings": st.fixed_dictionaries({}, optional={"model": ollama_names, "prompt": either(text)}),
    "/api/show": st.fixed_dictionaries({}, optional={"model": ollama_names, "name": ollama_names,
                                                     "verbose": either(st.booleans())}),
})
POST_ROUTES = tuple(BODIES)
GET_ROUTES = ("/v1/models", "/health", "/api/tags", "/api/ps", "/api/version", "/")


# ---------------------------------------------------------------------------------------- requests
def body_bytes(route: str):
    """A body for a route: its fields with good and bad values, any JSON, or bytes JSON cannot read."""
    shaped = (BODIES[route] if route in BODIES else st.just({})).map(lambda b: json.dumps(b).encode())
    other = st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.sampled_from([b"", b"{", b'{"messages": [', b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000,
                         b'{"max_tokens": 1' + b"0" * 5_000 + b"}", b'{"a": 1e999999}', b"null", b"NaN",
                         b'{"messages": "' + b"x" * 200_000 + b'"}', b'{"a":' * 50_000]))
    return st.one_of(shaped, shaped, shaped, other)


@st.composite
def requests(draw, port: int):
    route = draw(st.sampled_from(POST_ROUTES * 4 + GET_ROUTES + ("/v1/models/{id}", "/elsewhere")))
    if route == "/v1/models/{id}":
        route = "/v1/models/" + draw(st.sampled_from(["test", "gpt-4", "a/b", "%2e%2e", "smollm2-135m-instruct-q8_0"]))
    route += draw(st.sampled_from([""] * 12 + ["/", "?x=1", "?stream=true"]))
    usual = "POST" if route.split("?")[0].rstrip("/") in POST_ROUTES else "GET"  # ("/" stays "/")
    method = draw(st.sampled_from([usual] * 20 + ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    headers = {}
    kind = draw(st.sampled_from(["application/json"] * 25 + ["application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", None,
                                 "application/vnd.api+json", "json", "APPLICATION/JSON"]))
    if kind is not None:
        headers["content-type"] = kind
    origin = draw(st.sampled_from([None] * 25 + [f"http://127.0.0.1:{port}", "http://evil.example", "null",
                                                "http://localhost:3000", "garbage"]))
    if origin is not None:
        headers["origin"] = origin
    host = draw(st.sampled_from([None] * 25 + ["evil.example", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1",
                                              "127.0.0.1.nip.io"]))
    if host is not None:
        headers["host"] = host
    auth = draw(st.sampled_from([None] * 8 + ["Bearer x", "Basic Zm9vOmJhcg==", "bearer", "Bearer " + "k" * 500]))
    if auth is not None:
        headers["authorization"] = auth
    if draw(st.booleans()):
        headers["accept"] = draw(st.sampled_from(["text/event-stream", "*/*", "application/json", "x/y"]))
    body = draw(body_bytes(route.split("?")[0].rstrip("/"))) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
    return method, route, headers, body


# ---------------------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    server = ServeProcess(log, "--max-tokens", str(MAX_TOKENS), "--strict-model", "--queue", "4")
    yield server
    server.stop()


def is_openai_error(doc) -> bool:
    err = doc.get("error") if isinstance(doc, dict) else None
    return (isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"] != ""
            and isinstance(err.get("type"), str) and {"param", "code"} <= err.keys())


def is_ollama_error(doc) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"] != ""


def check_answer(method: str, route: str, response: http.client.HTTPResponse, raw: bytes) -> None:
    status = response.status
    assert status < 500 or status == 503, f"{status}: {raw[:500]!r}"
    if status == 503:
        assert int(response.headers["retry-after"]) > 0
    if method == "HEAD":
        return
    shaped = is_ollama_error if route.startswith("/api/") else is_openai_error  # each API's own error shape
    kind = response.headers["content-type"] or ""
    if status >= 400:
        assert kind.startswith("application/json"), dict(response.headers)
        assert shaped(json.loads(raw)), raw[:500]
        if status == 405:
            assert response.headers["allow"]
        return
    if kind.startswith("text/event-stream") or kind.startswith("application/x-ndjson"):
        sse = kind.startswith("text/event-stream")
        lines = [line[6:] if sse else line for line in raw.decode().split("\n") if line.startswith("data: ") or
                 (not sse and line.strip())]
        assert lines, raw[:500]
        for line in lines:
            if line != "[DONE]":
                doc = json.loads(line)
                assert isinstance(doc, dict) and ("error" not in doc or shaped(doc)), line
        return
    if kind.startswith("text/plain"):  # GET / says "Ollama is running", as Ollama does
        assert route.split("?")[0] == "/" and raw
        return
    doc = json.loads(raw)
    assert isinstance(doc, dict) and "error" not in doc, raw[:500]


def send(port: int, method: str, route: str, headers: dict, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on its own connection (stdlib: the exact bytes, methods and headers given); a
    stream is read to its end. A server silent for REQUEST_TIMEOUT raises."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request(method, route, body=body or None, headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_no_request_gets_a_500_a_hang_or_a_shapeless_error(fuzz_server):
    seen: dict[int, int] = {}

    @settings(max_examples=CASES, derandomize=True, database=None, deadline=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(requests(fuzz_server.port))
    def one(request):
        method, route, headers, body = request
        response, raw = send(fuzz_server.port, method, route, headers, body)
        seen[response.status] = seen.get(response.status, 0) + 1
        check_answer(method, route, response, raw)

    one()
    print(f"\n{sum(seen.values())} requests, statuses {dict(sorted(seen.items()))}")
    assert seen.get(200, 0) >= 50 and sum(n for s, n in seen.items() if s == 400) >= CASES // 4  # both kinds ran
    assert fuzz_server.proc.poll() is None and fuzz_server.health()["status"] == "ok"
    log = fuzz_server.log_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]
