"""`sense-local info` and `generate` on the real default model."""
from __future__ import annotations

import json

from conftest import run_cli


def test_info_json_reports_gguf_facts(model_path):
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["architecture"] == "llama"
    assert (info["n_embd"], info["n_vocab"], info["n_layer"]) == (576, 49152, 30)
    assert info["quantization"] == "Q8_0"  # the default: Q4_1 requantized at set-up
    assert info["n_ctx_train"] >= 2048
    assert "<|im_start|>" in info["chat_template"]
    again = json.loads(run_cli("info", str(model_path), "--json").stdout)
    assert again["fingerprint"] == info["fingerprint"] and len(info["fingerprint"]) == 32


def test_fingerprint_ignores_weights_but_not_header(tmp_path, model_path):
    from sense_local.model_info import read_model_info

    data = bytearray(model_path.read_bytes())
    base = read_model_info(model_path)
    changed_weights = tmp_path / "w.gguf"
    data_w = bytearray(data)
    data_w[-10] ^= 0xFF
    changed_weights.write_bytes(data_w)
    assert read_model_info(changed_weights).fingerprint == base.fingerprint
    changed_header = tmp_path / "h.gguf"
    pos = data.find(b"Smollm2")
    assert 0 < pos < 100_000
    data[pos] = ord("X")
    changed_header.write_bytes(data)
    assert read_model_info(changed_header).fingerprint != base.fingerprint


def test_a_gguf_cut_short_is_a_clear_error_wherever_it_ends(tmp_path, model_path):
    """The header is read a buffer at a time and its vocabulary stepped over in one loop: a file
    that ends inside the vocabulary, inside the tensor table, or inside the weights is named as
    damaged or truncated, never read past its end."""
    import pytest

    from sense_local.errors import ModelError
    from sense_local.model_info import read_model_info, scan_header

    data = model_path.read_bytes()
    header_end = scan_header(model_path).data_offset
    for end, said in ((200_000, "damaged or truncated GGUF header"), (header_end - 100, "damaged or truncated GGUF header"),
                      (header_end + 1000, "truncated GGUF")):
        cut = tmp_path / f"cut{end}.gguf"
        cut.write_bytes(data[:end])
        with pytest.raises(ModelError, match=said):
            read_model_info(cut)


def test_info_text_output():
    proc = run_cli("info")
    assert proc.returncode == 0
    assert "architecture: llama" in proc.stdout and "fingerprint" in proc.stdout


def test_generate_json_greedy_is_deterministic():
    args = ("generate", "List three colours.", "--max-tokens", "24", "--json", "--method", "ar")
    first = json.loads(run_cli(*args).stdout)
    second = json.loads(run_cli(*args).stdout)
    assert set(first) >= {"text", "tokens", "forwards", "tau", "tok_per_s", "method"}
    assert first["method"] == "ar" and first["tau"] == 1.0
    assert 0 < first["tokens"] <= 24 and first["forwards"] == first["tokens"]
    assert first["text"] == second["text"] and first["text"].strip()


def test_every_front_end_defaults_to_the_one_default_method():
    from sense_local.cli import build_parser
    from sense_local.speculative.methods import DEFAULT_METHOD
    from tui.settings import Settings

    parser = build_parser()
    for argv in (["generate", "x"], ["ask", "x"], ["chat"]):
        assert parser.parse_args(argv).method == DEFAULT_METHOD
    assert Settings().method == DEFAULT_METHOD
    doc = json.loads(run_cli("generate", "Say hi.", "--max-tokens", "4", "--json").stdout)
    assert doc["method"] == DEFAULT_METHOD


def test_generate_raw_continues_text_and_plain_output():
    proc = run_cli("generate", "The capital of France is", "--raw", "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


def test_generate_sampling_with_seed_is_reproducible():
    args = ("generate", "Tell me a story.", "--max-tokens", "20", "--temperature", "0.9", "--json")
    a = json.loads(run_cli(*args, "--seed", "1").stdout)
    b = json.loads(run_cli(*args, "--seed", "1").stdout)
    c = json.loads(run_cli(*args, "--seed", "2").stdout)
    assert a["text"] == b["text"]
    assert a["text"] != c["text"]


def test_generate_reads_prompt_from_stdin():
    proc = run_cli("generate", "-", "--max-tokens", "5", "--json", stdin="Say hello.")
    assert proc.returncode == 0 and json.loads(proc.stdout)["tokens"] > 0


def test_generate_pld_events_carry_provenance():
    prompt = "Repeat exactly: the cat sat on the mat, the cat sat on the mat, the cat sat on the mat."
    doc = json.loads(run_cli("generate", prompt, "--method", "pld", "--max-tokens", "40", "--json", "--events").stdout)
    assert {"drafted", "accepted", "events"} <= set(doc)
    events = doc["events"]
    assert "".join(e["text"] for e in events) == doc["text"]
    assert sum(e["source"] == "pld" for e in events) == doc["accepted"]
    assert {e["source"] for e in events} <= {"target", "pld"}
    assert doc["forwards"] <= doc["tokens"] and doc["tau"] >= 1.0


def test_bench_rejects_unknown_methods():
    proc = run_cli("bench", "--methods", "ar,bogus")
    assert proc.returncode == 2 and "unknown method(s) bogus" in proc.stderr


def test_cli_defaults_are_read_from_the_library():
    """Every subcommand's defaults are the library's own (one place to change them), and the subcommands
    that decode share one set of generation flags."""
    from sense_local.cli import build_parser
    from sense_local.conversation import ConversationConfig
    from sense_local.datastore.extract import MAX_FILE_BYTES
    from sense_local.datastore.indexer import COMMIT_EVERY
    from sense_local.datastore.store_writer import DEFAULT_DTYPE
    from sense_local.generation import DEFAULT_CHAT_MAX_TOKENS, GenerationOptions
    from sense_local.grounding.chat import DEFAULT_PASSAGES
    from sense_local.grounding.prompt import DEFAULT_BUDGET
    from sense_local.grounding.retrieve import DEFAULT_RANKER
    from sense_local.rpc import DEFAULT_PORT
    from sense_local.server.jobs import DEFAULT_QUEUE

    parser = build_parser()
    options, config = GenerationOptions(), ConversationConfig()
    replies = {"generate": options.max_tokens, "ask": options.max_tokens, "chat": DEFAULT_CHAT_MAX_TOKENS,
               "serve": DEFAULT_CHAT_MAX_TOKENS}
    for command, max_tokens in replies.items():
        args = parser.parse_args([command] + (["x"] if command in ("generate", "ask") else []))
        assert (args.method, args.max_tokens, args.temperature, args.theta) == (
            options.method, max_tokens, options.temperature, options.theta), command
        assert args.seed == (None if command == "serve" else options.seed), command  # serve: a seed per request
        assert (args.ctx, args.threads, args.gpu_layers) == (config.n_ctx, config.threads, config.gpu_layers)
    for command in ("ask", "serve"):
        args = parser.parse_args([command] + (["x"] if command == "ask" else []))
        assert (args.passages, args.budget, args.ranker) == (DEFAULT_PASSAGES, DEFAULT_BUDGET, DEFAULT_RANKER)
    assert parser.parse_args(["serve"]).queue == DEFAULT_QUEUE
    index = parser.parse_args(["index", "x"])
    assert (index.dtype, index.commit_every) == (DEFAULT_DTYPE, COMMIT_EVERY)
    assert index.max_file_mb * 2**20 == MAX_FILE_BYTES
    assert parser.parse_args(["rpc-worker"]).port == DEFAULT_PORT


def test_curve_is_shown_measured_once_and_is_what_replies_start_from(engine, model_path, tmp_path, monkeypatch):
    """`sense-local curve`: PRIOR where nothing was measured; --if-missing measures every size 1..32
    and every fourth to 64 once and keeps it; a second --if-missing finds it without loading the model
    (one kept from before, measured only to 32, is measured again); replies start from it."""
    from sense_local.speculative.cost import PRIOR, cost_curve_for

    env = {"SENSE_HOME": str(tmp_path / "home")}
    model = ["--model", str(model_path)]
    shown = json.loads(run_cli("curve", *model, "--json", env=env).stdout)
    assert shown["source"] == "prior" and shown["costs"] == [round(c, 3) for c in PRIOR.costs]
    monkeypatch.setenv("SENSE_HOME", env["SENSE_HOME"])
    assert f"sense-local curve --model {model_path} --measure" in _serve_log(tmp_path / "before.log", model)
    measured = run_cli("curve", *model, "--if-missing", "--json", env=env)
    doc = json.loads(measured.stdout)
    assert doc["source"] == "measured" and doc["measured_now"] and "measuring" in measured.stderr
    assert doc["lengths"] == [*range(1, 33), *range(36, 65, 4)] and doc["costs"][0] == 1.0 and doc["costs"][-1] > 1.5
    assert doc["prompt_layout"]["plain_tok_s"] > 0  # which weight layout reads prompts faster, with it
    kept = next(p for p in (tmp_path / "home" / "cache" / "cost").glob("*.json") if not p.stem.endswith("-layout"))
    verdict = kept.with_name(kept.stem + "-layout.json")
    assert json.loads(verdict.read_text()) == doc["prompt_layout"]
    written = kept.stat().st_mtime_ns
    again = json.loads(run_cli("curve", *model, "--if-missing", "--json", env=env).stdout)
    assert not again["measured_now"] and again["costs"] == doc["costs"]  # kept: not measured twice
    assert again["prompt_layout"] is None  # nor the verdict
    verdict.unlink()
    layout_only = json.loads(run_cli("curve", *model, "--if-missing", "--json", env=env).stdout)
    assert not layout_only["measured_now"] and layout_only["prompt_layout"]["repacked_tok_s"] > 0  # missing: measured
    assert kept.stat().st_mtime_ns == written
    old = json.loads(kept.read_text())
    kept.write_text(json.dumps({**old, "lengths": old["lengths"][:32], "costs": old["costs"][:32]}))
    remeasured = json.loads(run_cli("curve", *model, "--if-missing", "--json", env=env).stdout)
    assert remeasured["measured_now"] and remeasured["lengths"] == doc["lengths"]  # measured to 32 only: again
    flat = run_cli("curve", *model, env={**env, "SENSE_COST_FLAT": "1"})
    assert flat.returncode == 2 and "SENSE_COST_FLAT" in flat.stderr  # no curve to show: said, not faked
    assert [round(c, 3) for c in cost_curve_for(engine).costs] == remeasured["costs"]  # what a reply sizes drafts by
    assert "not measured" not in _serve_log(tmp_path / "after.log", model)  # the server says it only while true
    bad = run_cli("curve", "--model", "no-such-model", env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown model" in bad.stderr


def _serve_log(log, model: list[str]) -> str:
    """What `sense-local serve` says at start (a real server, stopped once it answers /health)."""
    from served import ServeProcess

    server = ServeProcess(log, *model, "--no-history")
    server.stop()
    return server.log_text()
