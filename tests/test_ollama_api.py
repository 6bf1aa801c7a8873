"""Ollama's API on the server's own port, driven by the official `ollama` Python package against the
real `sense-local serve` process on the 135M (ollama_routes.py): chat and generate, streamed and
not, the listings, structured output, embeddings, and bad requests in Ollama's error shape."""
from __future__ import annotations

import json
import re

import numpy as np
import ollama
import pytest

from conftest import pydoc_topics_store
from test_server import KEY, Server, http
from test_server_fim import MARKERS, PREFIX, SUFFIX, run_filled

MODEL = "smollm2-135m-instruct-q8_0"
TAGGED = MODEL + ":latest"


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def grounded(engine, tmp_path_factory):
    s = Server("--store", str(pydoc_topics_store(engine, tmp_path_factory, "ollama", ["with"])))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def coder():
    s = Server("--model", "default")  # Qwen2.5-Coder-1.5B: it has fill-in-the-middle tokens
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed():
    s = Server("--api-key", KEY, "--strict-model")
    yield s
    s.stop()


def client(server, **kw) -> ollama.Client:
    return ollama.Client(host=server.base, timeout=300, **kw)


def post(server, path: str, body: dict, **kw):
    return http("POST", server.base + path, json_body=body, timeout=120, **kw)


def test_tags_show_ps_and_version_describe_the_loaded_model(server):
    c = client(server)
    listed = c.list().models
    assert [m.model for m in listed] == [TAGGED]
    details = listed[0].details
    assert (details.format, details.family, details.quantization_level) == ("gguf", "llama", "Q8_0")
    assert details.parameter_size.endswith("M") and 100 < float(details.parameter_size[:-1]) < 200
    assert listed[0].size > 100 * 2**20
    shown = c.show(TAGGED)
    assert shown.capabilities == ["completion"]  # the 135M has no fill-in-the-middle tokens: no "insert"
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llama.block_count"] == 30
    assert "<|im_start|>" in shown.template
    params = dict(line.split(None, 1) for line in shown.parameters.splitlines())
    assert float(params["temperature"]) == 0.0 and int(params["num_ctx"]) == 2048
    running = c.ps().models
    assert [m.model for m in running] == [TAGGED] and running[0].context_length == 2048
    assert running[0].size_vram == 0  # a CPU build
    assert re.fullmatch(r"\d+\.\d+\.\d+", http("GET", server.base + "/api/version").json()["version"])
    root = http("GET", server.base + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"


def test_chat_streamed_equals_the_whole_reply_and_the_openai_route(server):
    c = client(server)
    messages = [{"role": "user", "content": "Name three rivers in Europe."}]
    options = {"temperature": 0, "num_predict": 32}
    whole = c.chat(TAGGED, messages, options=options)
    pieces = list(c.chat(TAGGED, messages, options=options, stream=True))
    text = "".join(p.message.content for p in pieces)
    assert whole.message.role == "assistant" and whole.message.content.strip() and text == whole.message.content
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 32
    assert whole.prompt_eval_count > 5 and 0 < whole.eval_duration < whole.total_duration
    assert all(not p.done for p in pieces[:-1]) and pieces[-1].done and pieces[-1].message.content == ""
    assert pieces[-1].eval_count == 32 and pieces[-1].done_reason == "length"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", whole.created_at)
    openai = server.client().chat.completions.create(model="x", messages=messages, max_tokens=32, temperature=0)
    assert openai.choices[0].message.content == whole.message.content  # one runtime behind both APIs


def test_speculation_figures_come_as_extra_fields(server):
    """`sense` on the closing object (the ollama client keeps only Ollama's fields: read raw)."""
    body = {"model": TAGGED, "messages": [{"role": "user", "content": "Name three rivers in Europe."}],
            "options": {"temperature": 0, "num_predict": 32}}
    whole = post(server, "/api/chat", {**body, "stream": False, "method": "ar"}).json()
    assert whole["sense"]["method"] == "ar" and whole["sense"]["drafted"] == 0 and whole["eval_count"] == 32
    lines = [json.loads(line) for line in post(server, "/api/chat", body).text.splitlines()]
    assert all(not d["done"] and "sense" not in d for d in lines[:-1]) and lines[-1]["done"]
    sense = lines[-1]["sense"]
    assert sense["method"] == "pld" and sense["tau"] >= 1 and sense["accepted"] <= sense["drafted"]
    assert "".join(d["message"]["content"] for d in lines) == whole["message"]["content"]
    assert lines[-1]["sources"] == [] and lines[-1]["dropped_messages"] == 0


def test_generate_is_a_templated_user_turn_and_raw_continues_text(server):
    c = client(server)
    options = {"temperature": 0, "num_predict": 20}
    generated = c.generate(TAGGED, "Name a fruit.", options=options)
    chatted = c.chat(TAGGED, [{"role": "user", "content": "Name a fruit."}], options=options)
    assert generated.response == chatted.message.content and generated.eval_count == chatted.eval_count
    streamed = list(c.generate(TAGGED, "Name a fruit.", options=options, stream=True))
    assert "".join(p.response for p in streamed) == generated.response and streamed[-1].done
    raw = c.generate(TAGGED, "The capital of France is", raw=True, options={"temperature": 0, "num_predict": 6})
    assert "Paris" in raw.response
    pirate = "You are a pirate. Always say Arr."
    system = c.generate(TAGGED, "Who are you?", system=pirate, options=options)
    as_chat = c.chat(TAGGED, [{"role": "system", "content": pirate}, {"role": "user", "content": "Who are you?"}],
                     options=options)
    assert system.response == as_chat.message.content and system.response != generated.response


def test_options_seed_stop_and_sampling(server):
    c = client(server)
    ask = [{"role": "user", "content": "Write one sentence about a cat."}]
    sampled = {c.chat(TAGGED, ask, options={"temperature": 1.0, "seed": 7, "num_predict": 24}).message.content
               for _ in range(2)}
    assert len(sampled) == 1  # a seed repeats itself
    greedy = c.chat(TAGGED, ask, options={"temperature": 0, "num_predict": 24}).message.content
    top1 = c.chat(TAGGED, ask, options={"temperature": 1.0, "top_k": 1, "num_predict": 24})
    assert top1.message.content == greedy
    counted = c.chat(TAGGED, [{"role": "user", "content": "Count from one to ten in words, one per line."}],
                     options={"temperature": 0, "num_predict": 60, "stop": ["\n"]})
    assert counted.message.content.strip() and "\n" not in counted.message.content
    assert counted.done_reason == "stop"
    # what clients send as defaults: load-time options have no effect, neutral penalties ask for nothing
    defaults = {"temperature": 0, "num_predict": 24, "num_ctx": 8192, "num_thread": 4, "repeat_penalty": 1.0,
                "mirostat": 0, "repeat_last_n": 64}
    assert c.chat(TAGGED, ask, options=defaults, keep_alive="5m").message.content == greedy
    assert c.chat(TAGGED, ask, options={"temperature": 0, "num_predict": 24}, keep_alive=-1).message.content == greedy


def test_format_json_and_a_schema_shape_the_reply(server):
    c = client(server)
    ask = [{"role": "user", "content": "Reply with a JSON object holding a key fruit set to the name of a fruit."}]
    free = c.chat(TAGGED, ask, format="json", options={"temperature": 0, "num_predict": 96})
    assert free.done_reason == "stop" and isinstance(json.loads(free.message.content), dict)
    # a key no reply about a cat would hold unless the schema's grammar made it
    schema = {"type": "object", "properties": {"zebra_count": {"type": "integer"}, "name": {"type": "string"}},
              "required": ["zebra_count", "name"], "additionalProperties": False}
    shaped = c.generate(TAGGED, "Describe a cat as JSON.", format=schema, options={"temperature": 0,
                                                                                "num_predict": 96})
    value = json.loads(shaped.response)
    assert list(value) == ["zebra_count", "name"] and isinstance(value["zebra_count"], int)
    unshaped = c.generate(TAGGED, "Describe a cat as JSON.", options={"temperature": 0, "num_predict": 96})
    assert "zebra_count" not in unshaped.response


def test_a_grounded_answer_carries_its_sources(grounded):
    body = {"model": TAGGED, "messages": [{"role": "user", "content": "What does the with statement do?"}],
            "options": {"temperature": 0, "num_predict": 16}, "stream": False}
    sources = post(grounded, "/api/chat", body).json()["sources"]
    assert sources and {s["path"].rsplit("/", 1)[-1] for s in sources} == {"with.txt"}
    assert all(s["snippet"] for s in sources)
    assert post(grounded, "/api/chat", {**body, "grounded": False}).json()["sources"] == []


def test_an_empty_request_loads_the_model(server):
    c = client(server)
    loaded = c.chat(TAGGED, [])
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    assert c.generate(TAGGED, "").done_reason == "load"


def test_embed_gives_unit_vectors_equal_to_the_openai_route(server):
    c = client(server)
    texts = ["How do I bake bread?", "Baking a loaf at home", "The stock market fell today"]
    done = c.embed(model="all-minilm", input=texts)
    vectors = np.array(done.embeddings)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]
    assert done.prompt_eval_count > 10 and done.total_duration > 0
    same = server.client().embeddings.create(model="all-minilm", input=texts, encoding_format="float")
    assert np.allclose(vectors, [d.embedding for d in same.data], atol=1e-6)
    legacy = c.embeddings(model="all-minilm", prompt=texts[0])
    assert np.allclose(legacy.embedding, vectors[0], atol=1e-6)
    running = c.ps().models  # the embedding model too, once loaded
    assert [m.model for m in running][0] == TAGGED and running[1].details.family == "bert"
    long = "bread " * 900
    assert len(c.embed(model="all-minilm", input=long).embeddings) == 1  # cut to the context, as truncate says
    with pytest.raises(ollama.ResponseError) as bad:
        c.embed(model="all-minilm", input=long, truncate=False)
    assert bad.value.status_code == 400 and "truncate is false" in bad.value.error


def _fails(status: int, call, *words: str) -> str:
    with pytest.raises(ollama.ResponseError) as caught:
        call()
    assert caught.value.status_code == status, caught.value.error
    assert all(w in caught.value.error for w in words), caught.value.error
    return caught.value.error


def test_bad_requests_get_ollama_shaped_errors(server):
    c = client(server)
    hi = [{"role": "user", "content": "hi"}]
    before = server.health()["completed"]
    _fails(400, lambda: c.chat(TAGGED, hi, options={"temperature": "hot"}), "temperature")
    _fails(400, lambda: c.chat(TAGGED, hi, options={"temprature": 0.5}), "temprature")
    _fails(400, lambda: c.chat(TAGGED, hi, options={"repeat_penalty": 1.3}), "repeat_penalty")
    _fails(400, lambda: c.chat(TAGGED, hi, options={"num_predict": 0}), "num_predict")
    _fails(400, lambda: c.chat(TAGGED, hi, format={"type": "string", "format": "email"}), "email")
    _fails(400, lambda: c.chat(TAGGED, hi, think=True), "thinking")
    _fails(400, lambda: c.chat(TAGGED, hi, keep_alive="soon"), "keep_alive")
    _fails(400, lambda: c.chat(TAGGED, [{"role": "user", "content": "hi", "images": [b"\x89PNG"]}]), "images")
    _fails(400, lambda: c.chat(TAGGED, [{"role": "wizard", "content": "hi"}]), "role")
    _fails(400, lambda: c.generate(TAGGED, "def f(", suffix="    return x"), "fill-in-the-middle")
    _fails(400, lambda: c.generate(TAGGED, "hi", raw=True, system="be brief"), "raw")
    _fails(413, lambda: c.chat(TAGGED, [{"role": "user", "content": "word " * 5000}]), "context holds 2048")
    assert server.health()["completed"] == before  # none of them ran
    xml = json.dumps({"model": TAGGED, "messages": hi, "format": "xml"}).encode()
    assert "invalid format" in http("POST", server.base + "/api/chat", content=xml).json()["error"]
    for path, body, status in [("/api/chat", b"{bad", 400), ("/api/chat", b"[1, 2]", 400),
                               ("/api/chat", b'{"messages": []}', 400), ("/api/show", b"{}", 400)]:
        r = http("POST", server.base + path, content=body)
        assert r.status_code == status and isinstance(r.json()["error"], str), (path, r.text)
    assert "model is required" in http("POST", server.base + "/api/chat", content=b'{"messages": []}').json()["error"]
    for r, status in [(http("POST", server.base + "/api/pull", json_body={"model": "x"}), 404),
                      (http("GET", server.base + "/api/chat"), 405),
                      (http("POST", server.base + "/api/chat", content=b"{}", headers={"Content-Type": "text/plain"}),
                       415),
                      (http("GET", server.base + "/api/tags", headers={"Host": "evil.example"}), 403)]:
        assert r.status_code == status and isinstance(r.json()["error"], str) and r.json()["error"], r.text
    assert server.health()["status"] == "ok"


def test_truncate_false_refuses_what_truncation_would_cut(server):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"note {i}: " + "word " * 12}
               for i in range(200)] + [{"role": "user", "content": "Say hi."}]
    c = client(server)
    assert c.chat(TAGGED, history, options={"temperature": 0, "num_predict": 4}).message.content
    body = {"model": TAGGED, "messages": history, "options": {"num_predict": 4}, "stream": False}
    cut = post(server, "/api/chat", body)
    assert 0 < cut.json()["dropped_messages"] < len(history) and cut.json()["prompt_eval_count"] + 4 <= 2048
    assert cut.headers["x-sense-dropped-messages"] == str(cut.json()["dropped_messages"])
    refused = post(server, "/api/chat", {**body, "truncate": False})
    assert refused.status_code == 400 and "truncate is false" in refused.json()["error"]


def test_a_key_and_strict_names(keyed):
    hi = [{"role": "user", "content": "Say hi."}]
    _fails(401, lambda: client(keyed).list(), "API key")
    authed = client(keyed, headers={"Authorization": f"Bearer {KEY}"})
    assert [m.model for m in authed.list().models] == [TAGGED]
    _fails(404, lambda: authed.chat("llama3.2", hi), "'llama3.2' not found")
    _fails(404, lambda: authed.show("llama3.2"), "not found")
    assert authed.chat(TAGGED, hi, options={"num_predict": 3}).message.content
    assert authed.chat(MODEL, hi, options={"num_predict": 3}).message.content
    # the tagged name on the OpenAI route too (oterm lists through /api/tags and chats through /v1)
    assert keyed.client(KEY).chat.completions.create(model=TAGGED, messages=hi, max_tokens=3).choices


def test_suffix_fills_in_the_middle_on_a_code_model(coder):
    """`suffix` on /api/generate: the FIM layout /infill and /v1/completions use (Continue's and Zed's
    Ollama autocomplete send this), on the default model, which says so in its capabilities."""
    c = client(coder)
    assert "insert" in c.show("default").capabilities
    done = c.generate("default", PREFIX, suffix=SUFFIX, options={"temperature": 0, "num_predict": 48})
    middle = done.response
    assert done.done_reason == "stop" and "return" in middle and not any(m in middle for m in MARKERS)
    assert run_filled(PREFIX + middle + SUFFIX)["mean"]([2, 4, 9]) == 5
    same = coder.client().completions.create(model="default", prompt=PREFIX, suffix=SUFFIX, max_tokens=48,
                                             temperature=0)
    assert same.choices[0].text == middle
