"""The OpenAI-compatible server, driven on loopback by the official `openai` client: the real
`sense-local serve` process, the real model, a real document store."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib.error
import urllib.request

import openai
import pytest

from conftest import ROOT, pydoc_topics_store, run_cli, server_env

TOPICS = ["with", "pass", "while", "lambda"]
KEY = "sk-test-1234"


class Response:
    def __init__(self, status: int, headers, text: str):
        self.status_code, self.headers, self.text = status, headers, text

    def json(self):
        return json.loads(self.text)


def http(method: str, url: str, *, json_body=None, content: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> Response:
    """A raw request (stdlib only): bodies the openai client would refuse to send."""
    data = content if content is not None else None if json_body is None else json.dumps(json_body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read().decode())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read().decode())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sense_local.cli", "serve", "--port", str(self.port), "--ctx", "2048", *args],
            cwd=ROOT, env=server_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            try:
                if http("GET", self.base + "/health", timeout=1).status_code == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start in 120 s")

    def client(self, key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=key, max_retries=0, timeout=300)

    def health(self) -> dict:
        return http("GET", self.base + "/health", timeout=5).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def store_dir(engine, tmp_path_factory) -> Path:
    return pydoc_topics_store(engine, tmp_path_factory, "server", TOPICS)


@pytest.fixture(scope="module")
def server(store_dir):
    s = Server("--store", str(store_dir))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed(store_dir):
    """A server that wants a key and lets one request wait."""
    s = Server("--api-key", KEY, "--queue", "1", "--strict-model", "--cors", "http://localhost:3000")
    yield s
    s.stop()


def chat(client, text: str, **kw):
    return client.chat.completions.create(model="test", messages=[{"role": "user", "content": text}], **kw)


def streamed(client, text: str, **kw) -> tuple[str, list]:
    chunks = list(chat(client, text, stream=True, **kw))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_models_lists_the_loaded_model(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == ["smollm2-135m-instruct-q8_0"]


@pytest.mark.parametrize("method", ["ar", "pld"])
def test_streamed_text_equals_the_whole_reply(server, method):
    client = server.client()
    plain = {"grounded": False, "method": method}
    whole = chat(client, "Name three rivers in Europe.", max_tokens=40, temperature=0, extra_body=plain)
    text, chunks = streamed(client, "Name three rivers in Europe.", max_tokens=40, temperature=0, extra_body=plain)
    assert whole.choices[0].message.content.strip() and text == whole.choices[0].message.content
    assert whole.usage.completion_tokens == 40 and whole.choices[0].finish_reason == "length"
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 40
    extra = whole.model_extra["sense"]
    assert extra["method"] == method and extra["tau"] >= 1 and extra["accepted"] <= extra["drafted"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].model_extra["sense"]["method"] == method


def test_tokens_a_draft_gives_at_once_go_out_in_one_chunk_with_every_logprob(server):
    """A forward's tokens (a verified draft's, then the bonus token) are pushed to the response
    together and streamed as one chunk (jobs.GenerationQueue._run, turn_jobs.token_runs): no more
    chunks than forwards, the text and each token's log-probability as the whole reply has them."""
    client = server.client()
    ask = "Repeat this text exactly, nothing else:\n" + "the quick brown fox jumps over the lazy dog, " * 6
    opts = {"max_tokens": 48, "temperature": 0, "extra_body": {"grounded": False, "method": "pld"}}
    whole = chat(client, ask, logprobs=True, **opts)
    text, chunks = streamed(client, ask, logprobs=True, **opts)
    pieces = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    assert whole.model_extra["sense"]["tau"] > 2  # the copy was drafted
    forwards = next(c.model_extra["sense"]["forwards"] for c in chunks if (c.model_extra or {}).get("sense"))
    assert text == whole.choices[0].message.content and len(pieces) <= forwards < whole.usage.completion_tokens
    streamed_logprobs = [e for p in pieces for e in p.logprobs.content]
    whole_logprobs = whole.choices[0].logprobs.content
    assert [e.token for e in streamed_logprobs] == [e.token for e in whole_logprobs]
    # the second request reuses the first's prompt (a batch of another shape): equal up to rounding
    assert [e.logprob for e in streamed_logprobs] == pytest.approx([e.logprob for e in whole_logprobs], abs=0.1)


def test_usage_counts_the_prompt_tokens_a_follow_up_reuses(server):
    """`prompt_tokens_details.cached_tokens`: a grounded follow-up reuses its whole first turn
    (passages included, grounding/memory.py), streamed or not, and a fresh question does not."""
    client = server.client()
    messages = [{"role": "user", "content": "What does the with statement do?"}]
    first = client.chat.completions.create(model="test", messages=messages, max_tokens=24, temperature=0)
    assert first.model_extra["sources"]  # grounded
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens // 2
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And what does a while loop do?"}]
    chunks = list(client.chat.completions.create(model="test", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    assert first.usage.prompt_tokens <= usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens


def test_a_conversation_too_long_for_the_context_says_what_was_left_out(server):
    history = []
    for i in range(200):
        history.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"note {i}: " + "word " * 12})
    history.append({"role": "user", "content": "Say hi."})
    raw = server.client().chat.completions.with_raw_response.create(
        model="test", messages=history, max_tokens=4, temperature=0, extra_body={"grounded": False})
    reply = raw.parse()
    dropped = reply.model_extra["dropped_messages"]
    assert 0 < dropped < len(history) and raw.headers["x-sense-dropped-messages"] == str(dropped)
    assert reply.usage.prompt_tokens + 4 <= 2048


def test_completions_continue_raw_text(server):
    client = server.client()
    done = client.completions.create(model="test", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert "Paris" in done.choices[0].text
    parts = client.completions.create(model="test", prompt="The capital of France is", max_tokens=6, temperature=0,
                                      stream=True)
    assert "".join(p.choices[0].text for p in parts) == done.choices[0].text


def test_stop_strings_end_the_reply_before_them(server):
    reply = chat(server.client(), "Count from one to ten in words, one per line.", max_tokens=60, stop=["\n"],
                 extra_body={"grounded": False})
    text = reply.choices[0].message.content
    assert text.strip() and "\n" not in text and reply.choices[0].finish_reason == "stop"


def test_grounded_answer_cites_its_sources(server):
    question = "What methods does a context manager of the with statement need?"
    reply = chat(server.client(), question, max_tokens=32)
    sources = reply.model_extra["sources"]
    assert "with.txt" in [Path(s["path"]).name for s in sources] and all(s["snippet"] for s in sources)
    text, chunks = streamed(server.client(), question, max_tokens=32)
    assert chunks[0].model_extra["sources"] == sources and text.strip()
    off = chat(server.client(), question, max_tokens=8, extra_body={"grounded": False})
    assert off.model_extra["sources"] == [] and off.usage.prompt_tokens < reply.usage.prompt_tokens


def test_a_client_that_disconnects_cancels_its_generation(server):
    before = server.health()
    stream = chat(server.client(), "Write a very long story about a lighthouse.", max_tokens=1500, stream=True,
                  extra_body={"grounded": False, "method": "ar"})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    t0 = time.time()
    while time.time() - t0 < 15:
        h = server.health()
        if h["cancelled"] > before["cancelled"] and not h["running"]:
            break
        time.sleep(0.1)
    assert h["cancelled"] == before["cancelled"] + 1 and not h["running"], h
    assert time.time() - t0 < 5  # stopped within a few decodes, not after 1500 tokens
    assert chat(server.client(), "Say yes.", max_tokens=4).choices[0].message.content


def _error(response: Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["message"] and body["type"]
    return body


def test_bad_requests_get_openai_shaped_errors(server):
    url = server.base + "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]
    assert "not valid JSON" in _error(http("POST", url, content=b"{bad", timeout=30), 400)["message"]
    assert _error(http("POST", url, json_body=[1, 2], timeout=30), 400)
    for bad, param in [({"temperature": 3}, "temperature"), ({"max_tokens": 0}, "max_tokens"),
                       ({"max_tokens": "ten"}, "max_tokens"), ({"n": 2}, "n"), ({"stop": ["a"] * 5}, "stop"),
                       ({"seed": 1.5}, "seed"), ({"method": "nope"}, "method"), ({"stream": "yes"}, "stream")]:
        assert _error(http("POST", url, json_body={"messages": msgs, **bad}, timeout=30), 400)["param"] == param, bad
    assert _error(http("POST", url, json_body={"messages": []}, timeout=30), 400)["param"] == "messages"
    assert _error(http("POST", url, json_body={"messages": [{"role": "wizard", "content": "x"}]}, timeout=30), 400)
    assert _error(http("POST", url, json_body={"messages": [{"role": "assistant", "content": "x"}]}, timeout=30), 400)
    for bad, param in [({"top_p": 0}, "top_p"), ({"top_k": 1.5}, "top_k"), ({"min_p": 1}, "min_p"),
                       ({"presence_penalty": 2.5}, "presence_penalty"), ({"logprobs": 1}, "logprobs"),
                       ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                       ({"response_format": {"type": "yaml"}}, "response_format"),
                       ({"prediction": "text"}, "prediction")]:
        assert _error(http("POST", url, json_body={"messages": msgs, **bad}, timeout=30), 400)["param"] == param, bad
    too_long = [{"role": "user", "content": "word " * 5000}]
    body = _error(http("POST", url, json_body={"messages": too_long, "grounded": False}, timeout=60), 413)
    assert "context holds 2048" in body["message"]
    # a body over the limit is refused from its Content-Length, before it is read
    assert _error(http("POST", url, content=b"{}", headers={"Content-Length": str(5 * 2**20)}, timeout=60), 413)
    assert _error(http("GET", server.base + "/v1/nothing", timeout=30), 404)
    assert server.health()["status"] == "ok"  # and the server goes on


def test_any_model_name_is_answered_by_the_loaded_model(server):
    """Clients name models of their own ('gpt-3.5-turbo' for title requests): the one model answers,
    and says which it is; the fields clients send by default change nothing."""
    client = server.client()
    defaults = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "n": 1,
                "grounded": False, "method": "ar"}
    named = client.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Say hi."}],
                                           max_tokens=8, temperature=0, extra_body=defaults)
    plain = chat(client, "Say hi.", max_tokens=8, temperature=0, extra_body={"grounded": False, "method": "ar"})
    assert named.model == "smollm2-135m-instruct-q8_0" and named.choices[0].message.content == plain.choices[0].message.content
    assert client.models.retrieve("smollm2-135m-instruct-q8_0").id == "smollm2-135m-instruct-q8_0"
    assert client.models.retrieve("gpt-4").id == "smollm2-135m-instruct-q8_0"


def test_sampling_without_a_seed_differs_and_top_k_1_is_greedy(server):
    client = server.client()
    plain = {"grounded": False, "method": "pld"}
    story = "Write one sentence about a cat."
    texts = {chat(client, story, max_tokens=24, temperature=1.0, extra_body=plain).choices[0].message.content
             for _ in range(3)}
    assert len(texts) > 1  # no seed: each request draws its own
    seeded = {chat(client, story, max_tokens=24, temperature=1.0, seed=7, extra_body=plain).choices[0].message.content
              for _ in range(2)}
    assert len(seeded) == 1
    greedy = chat(client, story, max_tokens=24, temperature=0, extra_body=plain).choices[0].message.content
    top1 = chat(client, story, max_tokens=24, temperature=1.0, extra_body={**plain, "top_k": 1}).choices[0].message.content
    assert top1 == greedy  # only the likeliest token may be drawn: sampling is greedy decoding


def test_pages_in_a_browser_cannot_use_the_server(server):
    """DNS rebinding and cross-site requests (guard.py): a foreign Host or Origin gets 403, a body not
    declared JSON 415, and none of them starts a generation or redirects to the foreign Host."""
    url = server.base + "/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "grounded": False}
    before = server.health()["completed"]
    assert _error(http("POST", url, json_body=body, headers={"Host": "evil.example"}, timeout=30), 403)
    assert _error(http("POST", url, json_body=body, headers={"Host": f"evil.example:{server.port}"}, timeout=30), 403)
    denied = http("POST", url, json_body=body, headers={"Origin": "http://evil.example"}, timeout=30)
    assert _error(denied, 403) and "access-control-allow-origin" not in {k.lower() for k in denied.headers}
    assert _error(http("POST", url, content=json.dumps(body).encode(), headers={"Content-Type": "text/plain"},
                       timeout=30), 415)
    assert _error(http("GET", server.base + "/v1/models/", headers={"Host": "evil.example"}, timeout=30), 403)
    assert server.health()["completed"] == before  # nothing ran
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost"):
        assert http("GET", server.base + "/v1/models", headers={"Host": host}, timeout=30).status_code == 200
    same_origin = http("POST", url, json_body=body, headers={"Origin": server.base}, timeout=60)
    assert same_origin.status_code == 200, same_origin.text


def test_malformed_bodies_and_methods_get_clear_errors(server):
    url = server.base + "/v1/chat/completions"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "nested too deeply" in _error(http("POST", url, content=deep, timeout=30), 400)["message"]
    huge = b'{"max_tokens": 1' + b"0" * 5000 + b"}"
    assert _error(http("POST", url, content=huge, timeout=30), 400)
    wrong = http("GET", url, timeout=30)
    assert _error(wrong, 405) and wrong.headers["Allow"] == "POST"
    assert server.health()["status"] == "ok"


def test_a_busy_port_is_one_line_before_the_model_loads(server):
    out = run_cli("serve", "--port", str(server.port))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {server.port} on 127.0.0.1 is in use" in lines[0]  # no banner: no model loaded


def test_api_key_is_required_when_set(keyed):
    with pytest.raises(openai.AuthenticationError):
        chat(keyed.client("wrong"), "hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError):  # --strict-model
        keyed.client(KEY).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert _error(http("GET", keyed.base + "/v1/models/gpt-4", headers={"Authorization": f"Bearer {KEY}"},
                       timeout=30), 404)["code"] == "model_not_found"
    assert _error(http("GET", keyed.base + "/v1/models", timeout=30), 401)["code"] == "invalid_api_key"
    assert chat(keyed.client(KEY), "Say hi.", max_tokens=3).choices[0].message.content
    allowed = http("GET", keyed.base + "/v1/models", headers={"Origin": "http://localhost:3000",
                                                                "Authorization": f"Bearer {KEY}"}, timeout=30)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_a_full_queue_answers_503_with_retry_after(keyed):
    client = keyed.client(KEY)
    long = dict(max_tokens=1500, extra_body={"method": "ar"})
    stream = chat(client, "Write a very long story about a dragon.", stream=True, **long)
    next(iter(stream))  # the model is busy with it
    waiting = ThreadPoolExecutor(1).submit(chat, client, "Say hi.", max_tokens=3)
    t0 = time.time()
    while keyed.health()["waiting"] < 1 and time.time() - t0 < 10:
        time.sleep(0.05)
    r = http("POST", keyed.base + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json_body={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert _error(r, 503)["code"] == "queue_full" and int(r.headers["retry-after"]) > 0
    stream.close()
    assert waiting.result(timeout=60).choices[0].message.content  # the queued one is answered


def test_twenty_concurrent_requests_are_all_answered(server):
    prompts = ["Name a fruit.", "Name a colour.", "Name an animal.", "Name a country."]
    options = dict(max_tokens=12, temperature=0, extra_body={"grounded": False, "method": "ar"})
    reference = {p: chat(server.client(), p, **options).choices[0].message.content for p in prompts}
    jobs = [prompts[i % 4] for i in range(20)]

    def ask(prompt):
        return prompt, chat(server.client(), prompt, **options).choices[0].message.content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, jobs))
    assert len(answers) == 20
    assert all(text == reference[prompt] for prompt, text in answers)
