"""Fill-in-the-middle through the real server: llama-server's `/infill` (plain HTTP requests, as
llama.vscode and Continue send it) and `suffix` on `/v1/completions` (the `openai` client), on the
default model (Qwen2.5-Coder-1.5B, which has FIM tokens) and on the 135M test model (which has none)."""
from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from test_server import Response, Server, http

# A real function with one line of its body taken out: the middle the model must write.
PREFIX = '''def mean(values):
    """The arithmetic mean of a non-empty list of numbers."""
    total = 0
    for v in values:
        total += v
'''
SUFFIX = '''

def spread(values):
    """The largest value minus the smallest."""
    return max(values) - min(values)
'''
# The same file with another line missing, for /v1/completions' suffix.
COMPLETION_PREFIX = '''def spread(values):
    """The largest value minus the smallest."""
    return max(values) - min(values)


def mean(values):
    """The arithmetic mean of a non-empty list of numbers."""
    total = 0
'''
COMPLETION_SUFFIX = '''        total += v
    return total / len(values)
'''
MARKERS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>", "<|file_sep|>", "<|im_end|>")


def run_filled(code: str) -> dict:
    """The filled-in file, compiled and run: its functions."""
    space: dict = {}
    exec(compile(code, "<filled>", "exec"), space)  # noqa: S102 - the model's code, in a test
    return space


@pytest.fixture(scope="module")
def coder():
    s = Server("--model", "default")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def small():
    s = Server()  # the 135M test model: no FIM tokens
    yield s
    s.stop()


def infill(server: Server, **body) -> Response:
    return http("POST", server.base + "/infill", json_body=body, timeout=300)


def test_infill_writes_the_missing_line_of_a_function(coder):
    """/infill on the 1.5B: the middle it returns, put back between prefix and suffix, makes a file
    that compiles and computes the mean; the reply ends at the end of the middle (end of generation,
    not the token limit) and shows no FIM or end-of-text marker."""
    r = infill(coder, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=48, temperature=0)
    assert r.status_code == 200, r.text
    doc = r.json()
    middle = doc["content"]
    print(f"1.5B /infill middle: {middle!r}  sense: {doc['sense']}")
    assert "return" in middle and "total" in middle
    assert not any(m in middle for m in MARKERS)
    assert doc["stop"] is True and doc["stopped_eos"] and not doc["stopped_limit"]
    assert doc["tokens_predicted"] < 48 and doc["truncated"] is False
    space = run_filled(PREFIX + middle + SUFFIX)
    assert space["mean"]([2, 4, 9]) == 5 and space["spread"]([2, 4, 9]) == 7
    assert doc["sense"]["method"] == "pld"  # the completions' decoding, default method


def test_infill_streamed_as_llama_server_streams_it(coder):
    """stream: one `data:` object per piece, the last with stop true and the figures, no [DONE];
    the pieces add up to the unstreamed middle."""
    whole = infill(coder, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=48, temperature=0).json()
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 48, "temperature": 0, "stream": True}
    req = urllib.request.Request(coder.base + "/infill", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode().rstrip("\n") for line in r if line.strip()]
    assert all(line.startswith("data: {") for line in lines)  # no [DONE]
    docs = [json.loads(line[6:]) for line in lines]
    assert [d["stop"] for d in docs] == [False] * (len(docs) - 1) + [True]
    assert "".join(d["content"] for d in docs) == whole["content"]
    assert docs[-1]["tokens_predicted"] == whole["tokens_predicted"]


def test_completions_suffix_fills_in_the_middle(coder):
    """`suffix` on /v1/completions through the openai client: the prompt is the text before the
    cursor, and the returned middle makes the file run."""
    done = coder.client().completions.create(model="default", prompt=COMPLETION_PREFIX, suffix=COMPLETION_SUFFIX,
                                             max_tokens=32, temperature=0)
    middle = done.choices[0].text
    print(f"1.5B /v1/completions suffix middle: {middle!r}")
    assert done.choices[0].finish_reason == "stop" and not any(m in middle for m in MARKERS)
    assert "for" in middle and "values" in middle
    space = run_filled(COMPLETION_PREFIX + middle + COMPLETION_SUFFIX)
    assert space["mean"]([1, 2, 6]) == 3


def test_a_raw_prompt_reads_the_models_special_tokens(coder):
    """A FIM prompt a client lays out itself (Continue's template for Qwen) is read with the
    special tokens: it gives the same middle as /infill, and `<|fim_prefix|>` is one prompt token."""
    raw = f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
    done = coder.client().completions.create(model="default", prompt=raw, max_tokens=48, temperature=0)
    served = infill(coder, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=48, temperature=0).json()
    assert done.choices[0].text == served["content"]
    assert done.usage.prompt_tokens == served["tokens_evaluated"]


def test_a_model_without_fim_tokens_is_a_clear_400(small):
    r = infill(small, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=8)
    assert r.status_code == 400
    assert "no fill-in-the-middle tokens" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        small.client().completions.create(model="test", prompt=PREFIX, suffix=SUFFIX, max_tokens=8)
    assert "no fill-in-the-middle tokens" in str(caught.value) and caught.value.body["param"] == "suffix"
    # an empty suffix asks for nothing after the prompt: a plain continuation, as before
    plain = small.client().completions.create(model="test", prompt="The capital of France is", suffix="",
                                              max_tokens=6, temperature=0)
    assert "Paris" in plain.choices[0].text


def test_bad_infill_fields_are_400s_naming_them(small):
    r = infill(small, input_prefix=PREFIX, input_extra="not a list")
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_extra"
    r = infill(small, input_prefix=3)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_prefix"


def test_the_fim_prompt_layout_and_what_is_cut_to_fit(default_engine):
    """fim.infill_tokens on the 1.5B's own tokens: other files in the repo-level layout before the
    prefix; when the code does not fit, the prefix keeps its end and the suffix its start (the text
    at the cursor), and the other files go first."""
    from sense_local.fim import Infill, infill_tokens

    eng, fim = default_engine, default_engine.fim
    text = lambda s: eng.tokenize(s, add_special=False)  # noqa: E731
    files = (("util.py", "def helper():\n    return 1\n"),)
    built = infill_tokens(eng, Infill(PREFIX, SUFFIX, "    return", files), room=2000)
    assert built.tokens == [fim.rep, *text("myproject\n"), fim.sep, *text("util.py\n"), *text(files[0][1]),
                            fim.sep, *text("filename\n"), fim.pre, *text(PREFIX), fim.suf, *text(SUFFIX),
                            fim.mid, *text("    return")]
    assert not built.truncated
    long_prefix = "".join(f"x{i} = {i}\n" for i in range(400)) + PREFIX
    cut = infill_tokens(eng, Infill(long_prefix, SUFFIX, "", files), room=300)
    assert cut.truncated and len(cut.tokens) == 300
    assert cut.tokens[0] == fim.pre  # the other file went first
    suffix_at = cut.tokens.index(fim.suf)
    assert cut.tokens[suffix_at - len(text(PREFIX)):suffix_at] == text(PREFIX)  # the prefix's end is kept
    assert cut.tokens[suffix_at + 1:-1] == text(SUFFIX)  # the whole (short) suffix is kept


def test_prompt_lookup_drafts_from_the_suffix(default_engine):
    """The default method's drafter (pld) reads the whole FIM prompt: a middle that starts to repeat
    code from after the cursor is drafted on from the suffix."""
    from sense_local.fim import Infill, infill_tokens
    from sense_local.speculative.drafters.pld import PromptLookupDrafter

    eng = default_engine
    drafter = PromptLookupDrafter()
    drafter.begin(infill_tokens(eng, Infill(PREFIX, SUFFIX), room=2000).tokens)
    drafter.extend(eng.tokenize("    return max", add_special=False))
    draft = drafter.propose(8)
    assert eng.detokenize(draft.tokens).startswith("(values) - min(values)")
