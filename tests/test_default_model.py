"""End to end on the real default chat model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M): a few tests, short outputs.

The rest of the suite runs on the fast 135M model; these check that what users run works.
"""
from __future__ import annotations

import json

from conftest import run_cli
from sense_local.bench.runner import NEAR_TIE, first_divergence
from sense_local.chat_template import chat_tokens
from sense_local.generation import GenerationOptions, make_decoder

QUOTE = ("Rewrite this sentence word for word, then stop: The lighthouse keeper climbed the spiral stairs "
         "every evening and polished the great lens until it shone across the bay.")


def test_info_reports_the_default_model_and_the_build():
    proc = run_cli("info", "--model", "default", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["architecture"] == "qwen2" and info["n_embd"] == 1536 and info["n_layer"] == 28
    assert info["quantization"] == "Q4_K_M" and info["n_vocab"] == 151936
    assert "CPU" in info["backends"] and "CPU :" in info["llama_cpp_system_info"]
    text = run_cli("info", "--model", "default")
    assert "llama.cpp:" in text.stdout and "backend:" in text.stdout


def test_generate_answers_on_the_default_model():
    proc = run_cli("generate", "What is the capital of France? Answer in one word.", "--model", "default",
                   "--max-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "paris" in doc["text"].lower() and 1 <= doc["tokens"] <= 8


def _run(engine, prompt, method, n, record_gaps=False, free_verification=False):
    options = GenerationOptions(method=method, max_tokens=n, free_verification=free_verification)
    decoder = make_decoder(engine, options, record_gaps=record_gaps)
    tokens = [e.token for e in decoder.generate(prompt, n) if e.token >= 0]
    return tokens, decoder.stats


def test_sense_drafts_a_quote_losslessly_on_the_default_model(default_engine):
    # draft sizes from a flat cost curve: with the real one they follow this run's own decode timings
    # (OnlineCost), and on a busy machine drafts can look too dear to verify (fresh clones saw tau 1.50)
    prompt = chat_tokens(default_engine, [{"role": "user", "content": QUOTE}])
    ar, ar_stats = _run(default_engine, prompt, "ar", 32, record_gaps=True)
    sense, stats = _run(default_engine, prompt, "sense", 32, free_verification=True)
    at = first_divergence(sense, ar)
    if at is not None:
        assert ar_stats.top2_gaps[at] < NEAR_TIE, (at, ar_stats.top2_gaps[at])
    assert "lighthouse keeper" in default_engine.detokenize(sense).lower()
    assert stats.accepted > 0 and stats.tau > 1.5, stats  # the quote is copied in multi-token steps


def test_grounded_ask_cites_the_document_on_the_default_model(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.md").write_text(
        "# The Brass Kettle Inn\n\nThe Brass Kettle Inn stands at the end of Harbour Lane in Wexmouth. "
        "It was opened in 1871 by Agnes Pellow, who brewed a dark ale called Lantern Stout. The inn closes "
        "every Tuesday so the cellar can be cleaned.\n")
    (docs / "garden.md").write_text(
        "# Allotments\n\nThe Wexmouth allotments grow leeks, runner beans and rhubarb. Plot holders meet on "
        "the first Sunday of the month to share seeds.\n")
    store = tmp_path / "store"
    proc = run_cli("index", str(docs), "--store", str(store), "--model", "default", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["store_vectors"] > 50
    proc = run_cli("ask", "Which day of the week is the Brass Kettle Inn closed?", "--store", str(store),
                   "--model", "default", "--max-tokens", "24", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert "tuesday" in doc["answer"].lower()
    assert doc["sources"] and doc["sources"][0]["path"].endswith("kettle.md")
