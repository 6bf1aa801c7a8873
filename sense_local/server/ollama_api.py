"""Ollama's HTTP API as sense-local reads it: `/api/chat`, `/api/generate` and `/api/embed` bodies
turned into the turns and embedding requests the OpenAI routes run (openai_api.py, embeddings_api.py).

Field names are Ollama's (its api/types.go): sampling in `options` (temperature, top_p, top_k,
min_p, seed, num_predict, stop), `format` "json" or a JSON schema, `suffix` for fill-in-the-middle,
`stream` true unless sent false, `keep_alive` accepted (the model stays loaded while the server runs).
Options that only tell Ollama how to load a model (num_ctx, num_thread, num_gpu, ...) are accepted
and have no effect: the model was loaded when the server started. A sampling option we do not serve
is a 400 naming it unless it has the value that asks for nothing; an unknown option is a 400 too.
Extras beyond Ollama's fields, as on the OpenAI routes: `method` and `grounded`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..generation import GenerationOptions
from ..schema_grammar import SchemaError, json_object_grammar, schema_grammar
from .api_error import ApiError
from .embeddings_api import EmbeddingRequest, parse_embeddings
from .fields import json_object, string_field
from .openai_api import TurnRequest, parse_turn

# Ollama option -> the OpenAI-route field that serves it
SERVED = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p", "seed": "seed",
          "stop": "stop", "num_predict": "max_tokens", "presence_penalty": "presence_penalty",
          "frequency_penalty": "frequency_penalty"}
# Options that ask for nothing at these values (what clients send as defaults); others are a 400.
NEUTRAL = {"repeat_penalty": (1, 1.0), "typical_p": (1, 1.0), "mirostat": (0,), "tfs_z": (1, 1.0)}
# Options that only shape the sampling options above (no effect while those are neutral): any value.
INERT = ("repeat_last_n", "penalize_newline", "mirostat_tau", "mirostat_eta", "num_keep")
# How Ollama loads a model: fixed here when the server started (README says so).
LOAD_TIME = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_thread", "numa",
             "low_vram", "f16_kv", "vocab_only", "draft_num_predict")
_DURATION = re.compile(r"^-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$|^-?\d+$")


@dataclass
class OllamaTurn:
    turn: TurnRequest  # what the shared runtime runs
    model: str  # the name the client asked for, echoed in every response as Ollama does
    truncate: bool = True  # False: a conversation longer than the context is a 400 instead of losing turns
    load_only: bool = False  # no messages / no prompt: Ollama's "load the model" request, answered at once


def parse_chat(body, defaults: GenerationOptions, n_ctx: int, *, fixed_seed: bool = False) -> OllamaTurn:
    """An /api/chat body; ApiError(400) naming the bad field."""
    body = json_object(body)
    model = require_model(body)
    messages = body.get("messages")
    if messages is None or messages == []:
        return OllamaTurn(_load_turn(defaults), model, load_only=True)
    if not isinstance(messages, list):
        raise ApiError(400, "messages must be a list of {role, content} objects")
    checked = [_message(m, i) for i, m in enumerate(messages)]
    turn = _turn(body, "chat", {"messages": checked}, defaults, n_ctx, fixed_seed)
    return OllamaTurn(turn, model, _flag(body, "truncate", True))


def parse_generate(body, defaults: GenerationOptions, n_ctx: int, *, fixed_seed: bool = False) -> OllamaTurn:
    """An /api/generate body: with `suffix` a fill-in-the-middle completion, with `raw` a raw
    continuation, otherwise the prompt as one user message under the chat template (and `system`)."""
    body = json_object(body)
    model = require_model(body)
    prompt, suffix, system = (string_field(body, key) for key in ("prompt", "suffix", "system"))
    raw = _flag(body, "raw", False)
    _refuse(body, "template", "", "the model's own chat template is always used (send raw: true for your own)")
    _refuse(body, "context", [], "the deprecated context tokens are not served: send the conversation to "
                                 "/api/chat as messages")
    if raw and system:
        raise ApiError(400, "raw mode does not support template, system, or context")
    if not prompt and not suffix:
        return OllamaTurn(_load_turn(defaults), model, load_only=True)
    if suffix or raw:
        fields = {"prompt": prompt, **({"suffix": suffix} if suffix else {})}
        turn = _turn(body, "completion", fields, defaults, n_ctx, fixed_seed)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        turn = _turn(body, "chat", {"messages": messages}, defaults, n_ctx, fixed_seed)
    return OllamaTurn(turn, model, _flag(body, "truncate", True))


@dataclass
class OllamaEmbed:
    model: str
    request: EmbeddingRequest | None  # None: no input, Ollama's "load the model" request
    truncate: bool = True  # False: an input longer than the model's context is a 400


def parse_embed(body, *, legacy: bool = False) -> OllamaEmbed:
    """An /api/embed body (`input`: text or a list of texts, as Ollama takes them), or with `legacy`
    an /api/embeddings body (`prompt`: one text)."""
    body = json_object(body)
    model = require_model(body)
    _keep_alive(body)
    _options(body.get("options"))
    texts = string_field(body, "prompt") if legacy else body.get("input")
    if isinstance(texts, list) and not all(isinstance(t, str) for t in texts) or \
            texts is not None and not isinstance(texts, (str, list)):
        raise ApiError(400, "input must be a string or a list of strings")
    truncate = _flag(body, "truncate", True)
    if texts in (None, "", []):
        return OllamaEmbed(model, None, truncate)
    fields = {"input": texts}
    if body.get("dimensions") not in (None, 0):
        fields["dimensions"] = body["dimensions"]
    return OllamaEmbed(model, parse_embeddings(fields), truncate)


def require_model(body: dict) -> str:
    model = body.get("model", body.get("name"))  # `name`: older clients' spelling
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    return model


def _turn(body: dict, kind: str, fields: dict, defaults: GenerationOptions, n_ctx: int,
          fixed_seed: bool) -> TurnRequest:
    """The OpenAI-route turn for an Ollama body: its options, format and extras checked here with
    Ollama's names, then parse_turn builds the GenerationOptions as for every other route."""
    _refuse(body, "images", [], "images are not served by this server (no vision model)")
    _refuse(body, "tools", [], "tools are not served on the Ollama routes yet (/v1/chat/completions serves them)")
    _refuse(body, "logprobs", False, "log-probabilities are not served on the Ollama routes")
    _refuse(body, "top_logprobs", 0, "log-probabilities are not served on the Ollama routes")
    think = body.get("think")
    if think not in (None, False):
        raise ApiError(400, f'"{body.get("model")}" does not support thinking')
    _keep_alive(body)
    grammar = _format(body.get("format"))
    oa = {**fields, **_options(body.get("options"), n_ctx), "stream": _flag(body, "stream", True)}
    for extra in ("method", "grounded"):
        if extra in body:
            oa[extra] = body[extra]
    turn = parse_turn(oa, kind, defaults, n_ctx, fixed_seed=fixed_seed)
    if grammar:
        turn.options = turn.options.replace(grammar=grammar)
    return turn


def _load_turn(defaults: GenerationOptions) -> TurnRequest:
    return TurnRequest("chat", defaults, stream=False)


def _options(options, n_ctx: int = 0) -> dict:
    """Ollama's `options` as OpenAI-route fields."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ApiError(400, "options must be an object")
    out = {}
    for key, value in options.items():
        if value is None or key in LOAD_TIME or key in INERT:
            continue
        if key in NEUTRAL:
            if not any(value == v and type(value) is type(v) for v in NEUTRAL[key]):
                raise ApiError(400, f"option {key!r} is not served by this server (send it unset, or "
                                    f"{NEUTRAL[key][0]!r})")
            continue
        if key not in SERVED:
            raise ApiError(400, f"option {key!r} is not an option this server knows")
        if key == "num_predict":
            value = _num_predict(value, n_ctx)
        elif key == "stop" and not isinstance(value, (list, str)):
            raise ApiError(400, 'option "stop" must be of type array')
        elif key in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty") and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(400, f"option {key!r} must be of type float")
        elif key in ("top_k", "seed") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or value != int(value)):
            raise ApiError(400, f"option {key!r} must be of type integer")
        out[SERVED[key]] = int(value) if key in ("top_k", "seed") else value
    return out


def _num_predict(value, n_ctx: int) -> int:
    """Ollama's num_predict: tokens at most; -1 (no limit) and -2 (fill the context) both end at the context."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ApiError(400, 'option "num_predict" must be of type integer')
    if value in (-1, -2):
        return n_ctx
    if not 1 <= value <= n_ctx:
        raise ApiError(400, f"option \"num_predict\" must be from 1 to the context size {n_ctx}, or -1 "
                            f"(got {int(value)})")
    return int(value)


def _format(fmt) -> str:
    """The GBNF for `format`: "json" (any JSON object) or a JSON schema; "" for none."""
    if fmt is None or fmt == "":
        return ""
    if fmt == "json":
        return json_object_grammar()
    if not isinstance(fmt, dict):
        raise ApiError(400, f'invalid format: expected "json" or a JSON schema (got {fmt!r})')
    try:
        return schema_grammar(fmt)
    except SchemaError as exc:
        raise ApiError(400, f"format: {exc}") from None


def _message(m, i: int) -> dict:
    if not isinstance(m, dict):
        raise ApiError(400, f"messages[{i}] must be an object with a role and content")
    for key in ("images", "tool_calls"):
        if m.get(key):
            raise ApiError(400, f"messages[{i}].{key}: not served by this server")
    content = m.get("content", "")
    if not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string")
    return {"role": m.get("role"), "content": content}  # `thinking` of earlier replies is left out


def _keep_alive(body: dict) -> None:
    """Accepted as Ollama takes it (seconds, or a duration such as "5m" or "-1"); the model stays
    loaded while the server runs whatever it says."""
    value = body.get("keep_alive")
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise ApiError(400, f'keep_alive must be a number of seconds or a duration such as "5m" (got {value!r})')


def _refuse(body: dict, key: str, harmless, why: str) -> None:
    value = body.get(key)
    if value is None or value == harmless and type(value) is type(harmless):
        return
    raise ApiError(400, f"{key}: {why}")


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be true or false (got {value!r})")
    return value
