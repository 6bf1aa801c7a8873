"""Keys read at an earlier block: the same states from a decode and from the indexing pass, the
layer recorded in the store, and states of different layers never compared."""
from __future__ import annotations

import numpy as np
import pytest

import sense_local as sl
from conftest import chat, run_cli
from sense_local.datastore import DocumentStore, index_paths
from sense_local.datastore.manifest import StoreError
from sense_local.errors import SenseError
from sense_local.generation import open_store
from sense_local.speculative.drafters.sense import SenseDrafter

BLOCK = 12


@pytest.fixture(scope="module")
def block_engine(model_path):
    eng = sl.Engine(model_path, n_ctx=2048, key_layer=BLOCK)
    yield eng
    eng.close()


def test_decode_and_indexing_pass_read_the_same_block_states(engine, block_engine):
    tokens = chat(block_engine, "Explain what a Python generator is, with a short example.")
    out = block_engine.eval(tokens, 0, outputs="keys", with_keys=True)
    assert out.keys.shape == (len(tokens), block_engine.n_embd) and out.logits.shape[0] == 1
    passed = block_engine.hidden_pass(1024).run(tokens)
    np.testing.assert_allclose(out.keys, passed, rtol=1e-3, atol=1e-3)
    final = engine.eval(tokens, 0, outputs="keys", with_keys=True)
    assert not np.allclose(final.keys, out.keys, atol=1e-2)  # another layer's states
    # the tap reads states and leaves the model alone: the same next-token logits as the final-key engine
    np.testing.assert_allclose(out.logits[-1], final.logits[-1], rtol=1e-3, atol=1e-2)


def test_block_states_of_a_tree_match_a_chain(block_engine):
    prompt = chat(block_engine, "Count from one to ten.")
    block_engine.eval(prompt[:-1], 0, outputs="last", with_keys=True)
    root, draft = prompt[-1], np.asarray(block_engine.tokenize(" one two three", add_special=False), np.int32)
    start = block_engine.n_past  # the root (the last chosen token) goes here, the draft after it
    tree = np.array(block_engine.eval_tree(root, draft, np.arange(-1, len(draft) - 1), with_keys=True).keys)
    block_engine.keep_path([], draft)
    chain = block_engine.eval(np.concatenate(([root], draft)).astype(np.int32), start, outputs="all", with_keys=True)
    np.testing.assert_allclose(tree, chain.keys, rtol=1e-3, atol=1e-3)


def test_a_store_keeps_its_key_layer(model_path, block_engine, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kettle.txt").write_text("The Brass Kettle Inn is closed on Tuesdays and serves soup on Fridays.\n")
    store_dir = tmp_path / "store"
    index_paths(block_engine, store_dir, [docs])
    store = DocumentStore.open(store_dir)
    assert store.manifest.key_layer == BLOCK and store.n_vectors > 0

    final = sl.Engine(model_path, n_ctx=1024, key_layer=None)
    try:
        with pytest.raises(StoreError, match=f"block {BLOCK}"):
            SenseDrafter(final, docs=store)  # queries of the final norm against block keys: refused
        opened = open_store(final, store_dir)  # the runtime follows the store
        assert final.key_layer == BLOCK
        SenseDrafter(final, docs=opened)
        (docs / "more.txt").write_text("Soup of the day: leek and potato.\n")
        final.use_key_layer(None)
        index_paths(final, store_dir, [docs])  # adding to it reads its layer too
        assert final.key_layer == BLOCK
        assert DocumentStore.open(store_dir).manifest.key_layer == BLOCK
    finally:
        final.close()


def test_key_layer_bad_values_are_one_line_errors(model_path, tmp_path):
    with pytest.raises(SenseError, match="not a block"):
        sl.Engine(model_path, n_ctx=256, key_layer=999)
    r = run_cli("index", str(tmp_path), "--store", str(tmp_path / "s"), "--key-layer", "middle")
    assert r.returncode == 2 and "block number, final or default" in r.stderr
    r = run_cli("index", str(tmp_path), "--store", str(tmp_path / "s"), "--key-layer", "999")
    assert r.returncode != 0 and "not a block of this model" in r.stderr and "Traceback" not in r.stderr


def test_states_asked_for_after_plain_decodes_cover_the_whole_context(model_path):
    """A block-keyed context's tap is off for plain decodes (the C tap asks for no tensor; without a C
    compiler there is no tap until hidden states are wanted); the first request evaluates the
    committed tokens again with it on."""
    eng = sl.Engine(model_path, n_ctx=1024, key_layer=BLOCK)
    try:
        tokens = chat(eng, "Hello there, how are you today?")
        eng.eval(tokens[:-1], 0, outputs="last", with_keys=False)
        assert eng.key_source.tap is None or (eng.key_source.tap.native and not eng.key_source.tap.enabled and eng.key_source.tap.n_read == 0)
        eng.eval(tokens[-1:], outputs="last", with_keys=True)
        states = eng.committed_keys(len(tokens))
        assert states is not None and eng.n_past == len(tokens)
        np.testing.assert_allclose(states, eng.hidden_pass(1024).run(tokens), rtol=1e-3, atol=1e-3)
    finally:
        eng.close()


def test_the_c_tap_reads_what_the_python_tap_reads(model_path, monkeypatch):
    """The compiled callback (built here with the compiler that built llama.cpp) copies the same
    rows the Python callback copies, and a tap switched off reads nothing."""
    from sense_local import hidden_pass, key_tap

    assert key_tap.native_callback() is not None, "no C compiler found to build the key tap"
    eng = sl.Engine(model_path, n_ctx=512, key_layer=BLOCK)
    try:
        assert eng.key_source.tap is not None and eng.key_source.tap.native
        tokens = chat(eng, "Name two rivers of Europe.")
        native_rows = np.array(eng.eval(tokens, 0, outputs="keys", with_keys=True).keys)
        eng.eval([tokens[-1]], len(tokens) - 1, outputs="last", with_keys=False)
        assert eng.key_source.tap.n_read == 0  # switched off: the graph ran whole, no rows copied
        python_tap = key_tap.KeyTap
        monkeypatch.setattr(hidden_pass, "KeyTap", lambda *a, **k: python_tap(*a, **k, native=False))
        slow = hidden_pass.HiddenPass(eng._model, eng.n_embd, n_ctx=512, n_batch=512, n_threads=eng.n_threads,
                                      layer=BLOCK)
        try:
            assert slow.available and not slow._tap.native
            np.testing.assert_allclose(slow.run(tokens), native_rows, rtol=1e-3, atol=1e-3)
        finally:
            slow.close()
    finally:
        eng.close()
