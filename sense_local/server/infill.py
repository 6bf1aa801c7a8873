"""llama-server's `POST /infill` (code completion at a cursor, as llama.vscode and Continue send it):
the request's fields into a turn, and the response in llama-server's shape (`content`, `stop`,
`tokens_predicted`, `timings`, ...; streamed as `data: {...}` lines with no `[DONE]`, as llama-server
streams it). The prompt is laid out by sense_local/fim.py; decoding is the completions' own."""
from __future__ import annotations

from ..conversation import Finished
from ..fim import Infill
from ..generation import GenerationOptions
from .api_error import ApiError
from .fields import json_object, string_field
from .openai_api import TurnRequest, parse_turn, sense_stats

FIELDS = ("input_prefix", "input_suffix", "input_extra", "prompt", "n_predict")


def parse_infill(body, defaults: GenerationOptions, n_ctx: int, *, fixed_seed: bool = False) -> TurnRequest:
    """Check an /infill body. `n_predict` is llama-server's max_tokens (-1: the server's default);
    sampling fields, `stop`, `seed` and `stream` are the completions' own."""
    body = json_object(body)
    rest = {k: v for k, v in body.items() if k not in FIELDS}
    n_predict = body.get("n_predict")
    if n_predict is not None and n_predict != -1 and "max_tokens" not in body:
        rest["max_tokens"] = n_predict
    turn = parse_turn(rest, "infill", defaults, n_ctx, fixed_seed=fixed_seed)
    prefix, suffix, prompt = (string_field(body, key) for key in ("input_prefix", "input_suffix", "prompt"))
    turn.infill = Infill(prefix, suffix, prompt, _extra(body.get("input_extra")))
    return turn


def _extra(extra) -> tuple[tuple[str, str], ...]:
    if extra is None:
        return ()
    if not isinstance(extra, list):
        raise ApiError(400, 'input_extra must be a list of {"filename": ..., "text": ...}', param="input_extra")
    files = []
    for i, chunk in enumerate(extra):
        name = chunk.get("filename", "tmp") if isinstance(chunk, dict) else None
        text = chunk.get("text") if isinstance(chunk, dict) else None
        if not isinstance(name, str) or not isinstance(text, str):
            raise ApiError(400, f"input_extra[{i}] must be an object with a string text (and filename)",
                           param="input_extra")
        files.append((name, text))
    return tuple(files)


def infill_chunk(text: str) -> dict:
    return {"index": 0, "content": text, "stop": False}


def infill_result(model: str, finished: Finished, prompt_tokens: int, truncated: bool) -> dict:
    """The last (or only) object of an /infill response."""
    s = finished.stats
    stop_type = {"eos": "eos", "stop-string": "word", "length": "limit"}.get(s.stop_reason, "none")
    return {
        "index": 0, "content": finished.text, "id_slot": 0, "stop": True, "model": model,
        "tokens_predicted": s.tokens, "tokens_evaluated": prompt_tokens, "tokens_cached": s.cached_tokens,
        "truncated": truncated, "stop_type": stop_type, "stopped_eos": stop_type == "eos",
        "stopped_word": stop_type == "word", "stopped_limit": stop_type == "limit",
        "timings": {"prompt_n": prompt_tokens - s.cached_tokens, "prompt_ms": round(s.t_prefill * 1000, 3),
                    "predicted_n": s.tokens, "predicted_ms": round(s.t_total * 1000, 3),
                    "predicted_per_second": round(s.tok_per_s, 2)},
        "sense": sense_stats(s),
    }
