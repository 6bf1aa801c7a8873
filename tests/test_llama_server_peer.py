"""llama.cpp's own llama-server as the bench's peer: built from the vendored llama.cpp (once per
machine, in the user's cache: the first run of this file on a new machine builds it, ~7-12 min),
decoding what our engine decodes, its figures read from its own timings."""
from __future__ import annotations

import os

import pytest

from conftest import chat
from sense_local.bench.llama_server import LlamaServerPeer, server_binary
from sense_local.bench.runner import NEAR_TIE, PREFILL_PAIRS, fresh_prefills
from sense_local.generation import GenerationOptions, make_decoder

COPY = ("Repeat the following text exactly, word for word:\n\n"
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow.")


@pytest.fixture(scope="module")
def binary():
    saved = os.environ.pop("SENSE_HOME", None)  # the user's cache: the build is kept across runs
    try:
        return server_binary()
    finally:
        if saved is not None:
            os.environ["SENSE_HOME"] = saved


def ar_reply(engine, prompt, n):
    decoder = make_decoder(engine, GenerationOptions(method="ar", max_tokens=n), record_gaps=True)
    tokens = [e.token for e in decoder.generate(prompt, n) if e.token >= 0]
    return tokens, decoder.stats.top2_gaps


def assert_same_until_a_near_tie(theirs, ours, gaps):
    for i, (a, b) in enumerate(zip(theirs, ours)):
        if a != b:
            assert gaps[i] < NEAR_TIE, f"parted at token {i} where the top-2 gap was {gaps[i]:.3f}"
            return
    assert len(theirs) == len(ours) or min(len(theirs), len(ours)) == 0


def test_llama_server_decodes_what_our_engine_decodes(binary, engine, model_path):
    prompt = chat(engine, "Explain what a hash table is in two sentences.")
    ours, gaps = ar_reply(engine, prompt, 48)
    peer = LlamaServerPeer(binary, model_path, spec_type=None, n_ctx=1024, n_threads=engine.n_threads)
    try:
        r = peer.run(prompt, 48)
        assert r.error is None and r.tok_per_s > 0 and r.drafted == 0
        assert_same_until_a_near_tie(r.tokens, ours, gaps)
        again = peer.run(prompt, 4, fresh=True)  # no cached prefix: the whole prompt evaluated
        assert again.prompt_n == len(prompt) and again.prompt_tok_per_s > 0
        cached = peer.run(prompt, 4)
        assert cached.prompt_n < len(prompt)  # its prompt cache on: only the tail again
        # the bench's paired fresh prefills: `reps` pairs when time is short, up to PREFILL_PAIRS
        # while they fit, each side evaluating the whole prompt
        ours, theirs = fresh_prefills(engine, peer, prompt, 2, seconds=0.0)
        assert len(ours) == len(theirs) == 2 and engine.tokens == list(prompt)
        ours, theirs = fresh_prefills(engine, peer, prompt, 2, seconds=600.0)
        assert len(ours) == len(theirs) == PREFILL_PAIRS and min(ours + theirs) > 0
    finally:
        peer.close()
    assert peer.proc is None


def test_a_spec_type_peer_drafts_and_stays_lossless(binary, engine, model_path):
    prompt = chat(engine, COPY)
    ours, gaps = ar_reply(engine, prompt, 40)
    peer = LlamaServerPeer(binary, model_path, spec_type="ngram-simple", n_ctx=1024, n_threads=engine.n_threads)
    try:
        r = peer.run(prompt, 40)
    finally:
        peer.close()
    assert r.error is None and r.drafted > 0 and 0 < r.accepted <= r.drafted
    assert_same_until_a_near_tie(r.tokens, ours, gaps)


def test_a_pooled_spec_type_starts_each_request_on_an_empty_pool(binary, engine, model_path):
    """ngram-mod keeps one n-gram pool across requests: the peer restarts before each, so a repeated
    request drafts as the first did instead of copying the answer it gave before."""
    prompt = chat(engine, "Write a short poem about autumn leaves.")
    peer = LlamaServerPeer(binary, model_path, spec_type="ngram-mod", n_ctx=1024, n_threads=engine.n_threads)
    try:
        first_pid = peer.proc.pid
        a = peer.run(prompt, 48)
        b = peer.run(prompt, 48)
        assert peer.proc.pid != first_pid
    finally:
        peer.close()
    assert a.tokens == b.tokens and a.accepted == b.accepted

