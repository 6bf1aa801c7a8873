"""OpenAI's HTTP API as sense-local speaks it: request bodies checked into options, and the response
and chunk shapes (errors: api_error.py, error_replies.py). Extras beyond OpenAI's fields: `sense` (speculation statistics) on every
response (on the last chunk when streamed) and `sources` (what a grounded answer cites); requests may
name a decoding `method` and turn grounding off with `"grounded": false`."""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field

from ..conversation import Finished
from ..errors import SenseError
from ..fim import Infill
from ..generation import MAX_STOPS, GenerationOptions
from ..schema_grammar import SchemaError, json_object_grammar, schema_grammar
from ..speculative.logprobs import MAX_TOP
from ..speculative.types import GenerationStats
from ..tool_calls import ToolRequest, template_tool_calls
from .api_error import ApiError
from .fields import is_int, json_object, number, typed

ROLES = ("system", "user", "assistant", "developer", "tool")


@dataclass
class TurnRequest:
    kind: str  # "chat" | "completion" | "infill" (llama-server's /infill, infill.py)
    options: GenerationOptions
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    grounded: bool | None = None  # None: as the server was started (with --store: grounded)
    messages: list[dict] = field(default_factory=list)  # chat
    prompt: str = ""  # completion
    infill: Infill | None = None  # fill-in-the-middle: /infill, or a completion with a `suffix`
    tokens: list[int] | None = None  # the prompt built from `infill` (fim.py), once the model is known
    tools: ToolRequest | None = None  # chat: the tools the model may call (tools_api.py), once the model is known
    echo: bool = False  # completions: the prompt's text returned before the completion


def parse_turn(body, kind: str, defaults: GenerationOptions, n_ctx: int, *, fixed_seed: bool = False) -> TurnRequest:
    """Check a /v1/chat/completions or /v1/completions body (or /infill's other fields, infill.py);
    ApiError(400) names the bad field (the first bad one, in the order checked here). A request
    without a seed gets a random one, unless the server was given one (`fixed_seed`)."""
    body = json_object(body)
    stream = typed(body, "stream", bool, False)
    stream_options = typed(body, "stream_options", dict, {}) or {}
    if typed(body, "n", int, 1) != 1:
        raise ApiError(400, "n: only one choice per request is supported", param="n")
    sampling = _sampling(body, defaults, n_ctx)
    method = typed(body, "method", str, defaults.method)
    grounded = typed(body, "grounded", bool, None)
    prediction = _prediction(body.get("prediction"))
    grammar = _response_format(body.get("response_format"))
    _refuse_unserved(body)
    truncation = {key: number(body, key, default) for key, default in
                  (("top_k", defaults.top_k), ("top_p", defaults.top_p), ("min_p", defaults.min_p),
                   ("presence_penalty", defaults.presence_penalty),
                   ("frequency_penalty", defaults.frequency_penalty))}
    logprobs = parse_logprobs(body, kind)
    seed = sampling["seed"]
    if seed is None:
        seed = defaults.seed if fixed_seed else secrets.randbits(32)  # "regenerate" must not repeat itself
    sampling["seed"] = seed % 2**32
    try:
        options = defaults.replace(method=method, **sampling, prediction=prediction, grammar=grammar,
                                   logprobs=logprobs, **truncation)
    except SenseError as exc:
        param = next((k for k in (*truncation, "top_logprobs") if k in str(exc)), "method")
        raise ApiError(400, str(exc), param=param) from None
    request = TurnRequest(kind, options, stream, bool(stream_options.get("include_usage")), grounded)
    if kind == "chat":
        request.messages = _messages(body.get("messages"))
    elif kind == "completion":
        _completion_fields(request, body)
    return request


def _sampling(body: dict, defaults: GenerationOptions, n_ctx: int) -> dict:
    """max_tokens, temperature, seed (None: not sent) and stop, checked in that order."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = defaults.max_tokens
    elif not is_int(max_tokens) or not 1 <= max_tokens <= n_ctx:
        raise ApiError(400, f"max_tokens must be an integer from 1 to the context size {n_ctx} (got {max_tokens!r})",
                       param="max_tokens")
    temperature = body.get("temperature", defaults.temperature)
    if temperature is None:
        temperature = defaults.temperature
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ApiError(400, f"temperature must be a number from 0 to 2 (got {temperature!r})", param="temperature")
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise ApiError(400, f"seed must be an integer (got {seed!r})", param="seed")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings", param="stop")
    return {"max_tokens": max_tokens, "temperature": float(temperature),
            "seed": seed, "stop": tuple(stop)}


def _completion_fields(request: TurnRequest, body: dict) -> None:
    """/v1/completions' own fields: the prompt, a `suffix` (fill-in-the-middle) and `echo`."""
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise ApiError(400, f"suffix must be a string (got {suffix!r})", param="suffix")
    # with a suffix the prompt is the text before the cursor, which may be none (the file's start)
    request.prompt = _prompt(body.get("prompt") or "" if suffix is not None else body.get("prompt"),
                             empty=suffix is not None)
    if suffix is not None:
        request.infill = Infill(request.prompt, suffix)
    request.echo = typed(body, "echo", bool, False)
    if request.echo and (suffix is not None or request.options.logprobs is not None):
        raise ApiError(400, "echo: served without suffix and logprobs only (the prompt's own log-probabilities "
                            "are not computed)", param="echo")


MAX_COMPLETION_LOGPROBS = 5  # the legacy completions API's cap


def parse_logprobs(body: dict, kind: str) -> int | None:
    """How many likeliest alternatives to report per token (None: no log-probabilities at all).
    chat: `logprobs: true` with `top_logprobs` 0-20; completions: `logprobs` 0-5."""
    if kind == "chat":
        wanted, top = body.get("logprobs"), body.get("top_logprobs")
        if wanted is not None and not isinstance(wanted, bool):
            raise ApiError(400, f"logprobs must be true or false (got {wanted!r})", param="logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP):
            raise ApiError(400, f"top_logprobs must be an integer from 0 to {MAX_TOP} (got {top!r})",
                           param="top_logprobs")
        if not wanted:
            if top:
                raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            return None
        return top or 0
    wanted = body.get("logprobs")
    if wanted is None:
        return None
    if kind == "infill":
        raise ApiError(400, "logprobs: not served on /infill (use /v1/completions with a suffix)", param="logprobs")
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 0 <= wanted <= MAX_COMPLETION_LOGPROBS:
        raise ApiError(400, f"logprobs must be an integer from 0 to {MAX_COMPLETION_LOGPROBS} (got {wanted!r})",
                       param="logprobs")
    return wanted


# Fields we do not serve yet, with the values that ask for nothing (what clients send by default).
# Anything else is a 400 naming the field: a silent 200 would pretend it had an effect.
UNSERVED = {
    "repetition_penalty": (1, 1.0), "logit_bias": ({},),
    "functions": ([],),
    "function_call": ("none", "auto"),
    "best_of": (1,), "audio": (), "modalities": (["text"],),
}


def _refuse_unserved(body: dict) -> None:
    for key, harmless in UNSERVED.items():
        value = body.get(key)
        if value is None or any(value == h and type(value) is type(h) for h in harmless):
            continue
        raise ApiError(400, f"{key}: not supported by this server (send it unset, or {harmless[0]!r})"
                       if harmless else f"{key}: not supported by this server", param=key)


def _messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] must be an object with a role ({', '.join(ROLES)})", param="messages")
        role = "system" if m["role"] == "developer" else m["role"]
        message = {"role": role, "content": _text(m.get("content"), f"messages[{i}].content")}
        if role == "assistant" and m.get("tool_calls"):
            message["tool_calls"] = template_tool_calls(_tool_calls(m["tool_calls"], f"messages[{i}].tool_calls"))
        if role == "tool":
            _tool_result(m, i, out, message)
        out.append(message)
    if out[-1]["role"] not in ("user", "tool"):
        raise ApiError(400, "the last message must be the user's (or a tool's result)", param="messages")
    return out


def _tool_calls(calls, where: str) -> list[dict]:
    """An assistant message's earlier calls, checked: [{"id", "type": "function", "function": {"name",
    "arguments": JSON text}}]."""
    if not isinstance(calls, list):
        raise ApiError(400, f"{where} must be a list of calls", param="messages")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments"), str)
                and isinstance(call.get("id", ""), str)):
            raise ApiError(400, f'{where}[{j}] must be {{"id": ..., "type": "function", "function": {{"name": ..., '
                                f'"arguments": "<JSON text>"}}}}', param="messages")
    return calls


def _tool_result(m: dict, i: int, earlier: list[dict], message: dict) -> None:
    """A tool message answers a call by its tool_call_id; the call's function name goes with it
    (some templates show it)."""
    call_id = m.get("tool_call_id")
    if call_id is not None and not isinstance(call_id, str):
        raise ApiError(400, f"messages[{i}].tool_call_id must be a string", param="messages")
    message["tool_call_id"] = call_id
    names = {c.get("id"): c["function"]["name"] for e in earlier for c in e.get("tool_calls", ())}
    if call_id in names:
        message["name"] = names[call_id]


def _text(content, where: str) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}: only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where} must be a string or a list of text parts", param="messages")


def _prediction(prediction) -> str:
    """OpenAI's Predicted Outputs: {"type": "content", "content": text or text parts}; "" for none."""
    if prediction is None:
        return ""
    if not isinstance(prediction, dict) or prediction.get("type") != "content" or "content" not in prediction:
        raise ApiError(400, 'prediction must be {"type": "content", "content": "..."}', param="prediction")
    return _text(prediction["content"], "prediction.content")


def _response_format(fmt) -> str:
    """The GBNF a reply must match: none for {"type": "text"}, any JSON object for "json_object", the
    schema's grammar for {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}; a
    schema the grammar cannot enforce is a 400 naming what (schema_grammar.py)."""
    if fmt is None:
        return ""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return ""
    if kind == "json_object":
        return json_object_grammar()
    if kind != "json_schema":
        raise ApiError(400, 'response_format must be {"type": "text"}, {"type": "json_object"} or '
                            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                       param="response_format")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object", param="response_format")
    try:
        return schema_grammar(spec["schema"])
    except SchemaError as exc:
        raise ApiError(400, f"response_format: {exc}", param="response_format", code="unsupported_schema") from None


def _prompt(prompt, *, empty: bool = False) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not (prompt or empty):
        raise ApiError(400, "prompt must be a non-empty string (one prompt per request)", param="prompt")
    return prompt


# ---------------------------------------------------------------------- responses
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def finish_reason(finished: Finished) -> str:
    """"stop", "length", or "cancelled" (a reply stopped early, e.g. as the server shut down): a
    cut-short reply is never passed off as one that ran to its limit."""
    return finished.finish_reason


def usage(prompt_tokens: int, stats: GenerationStats) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": stats.tokens,
            "total_tokens": prompt_tokens + stats.tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens},
            "completion_tokens_details": {"accepted_prediction_tokens": stats.prediction_accepted,
                                          "rejected_prediction_tokens": stats.prediction_rejected}}


def sense_stats(stats: GenerationStats) -> dict:
    """The speculation figures of a reply (the extra `sense` field)."""
    return {"method": stats.method, "tau": round(stats.tau, 4), "drafted": stats.drafted, "accepted": stats.accepted,
            "soft_accepted": stats.soft_accepted, "forwards": stats.forwards, "tok_per_s": round(stats.tok_per_s, 2),
            "prefill_s": round(stats.t_prefill, 4), "stop_reason": stats.stop_reason}


def envelope(kind: str, rid: str, model: str, *, chunk: bool) -> dict:
    obj = {"chat": "chat.completion", "completion": "text_completion"}[kind]
    return {"id": rid, "object": obj + (".chunk" if chunk and kind == "chat" else ""), "created": int(time.time()),
            "model": model}


def choice(kind: str, text: str, *, chunk: bool, finish: str | None, first: bool = False,
           logprobs: dict | None = None) -> dict:
    """One choice; `logprobs` in the kind's shape (logprobs_api.py) or None."""
    if kind == "completion":
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
    if not chunk:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": finish}
    delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
    return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
