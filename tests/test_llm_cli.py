"""Simon Willison's `llm` CLI pointed at `sense-local serve` as an OpenAI-compatible model
(extra-openai-models.yaml in a temporary LLM_USER_PATH, as its docs describe): a prompt, a
conversation continued with `llm -c`, and a `--schema` reply, on the 135M. The server decodes with
`ar` so that a reply can be compared with the `openai` client's for the same messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from test_server import Server

LLM = str(Path(sys.executable).with_name("llm"))
MODEL = "sense"


@pytest.fixture(scope="module")
def server():
    s = Server("--method", "ar")
    yield s
    s.stop()


@pytest.fixture
def llm(server, tmp_path):
    """Run `llm` with its own home, knowing the server as the model 'sense'."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: {MODEL}\n"
        f"  model_name: smollm2-135m-instruct-q8_0\n"
        f"  api_base: \"{server.base}/v1\"\n"
        f"  supports_schema: true\n")
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "none"}

    def run(*args: str) -> str:
        done = subprocess.run([LLM, *args], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    return run


SHORT = ("-o", "temperature", "0", "-o", "max_tokens", "40")  # greedy, and short: the 135M runs on


def openai_reply(server, messages: list[dict]) -> str:
    reply = server.client().chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=40)
    return reply.choices[0].message.content.strip()


def test_a_prompt_is_answered_as_the_openai_client_is(server, llm):
    prompt = "Name three colours of the rainbow."
    text = llm("-m", MODEL, *SHORT, prompt)
    assert text and text == openai_reply(server, [{"role": "user", "content": prompt}])


def test_a_conversation_continued_with_c_sends_the_history(server, llm):
    first, second = "My cat is called Tom. Say hello to him.", "What is my cat called?"
    one = llm("-m", MODEL, *SHORT, first)
    two = llm("-c", *SHORT, second)
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": one},
               {"role": "user", "content": second}]
    assert two == openai_reply(server, history)  # the very reply to the whole history, greedy
    assert two != openai_reply(server, [{"role": "user", "content": second}])  # not the question alone's
    logged = json.loads(llm("logs", "--json", "-n", "2"))
    assert len({row["conversation_id"] for row in logged}) == 1 and len(logged) == 2


def test_a_schema_reply_validates(llm):
    text = llm("-m", MODEL, "--schema", "name, age int, likes_cats bool", "Invent a person.")
    obj = json.loads(text)
    jsonschema.validate(obj, {"type": "object", "required": ["name", "age", "likes_cats"], "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "likes_cats": {"type": "boolean"}}})
    logged = json.loads(llm("logs", "--json", "-n", "1"))[0]
    schema = logged["schema_json"]
    schema = json.loads(schema) if isinstance(schema, str) else schema
    assert set(schema["properties"]) == {"name", "age", "likes_cats"}  # llm sent it as a schema
