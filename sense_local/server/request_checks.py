"""What every route checks of a request before it works: the API key, the model it names, and a
body that is JSON of a bounded size."""
from __future__ import annotations

import json
import secrets

from starlette.requests import Request

from .api_error import ApiError
from .state import ServerState

MAX_BODY = 4 * 2**20  # bytes of request body accepted (a prompt this long would not fit any context anyway)


def authorize(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:].strip() if given.lower().startswith("bearer ") else ""
    if not secrets.compare_digest(token.encode(), state.api_key.encode()):
        raise ApiError(401, "missing or wrong API key (send it as 'Authorization: Bearer KEY')",
                       type="invalid_request_error", code="invalid_api_key")


def check_model(state: ServerState, model) -> None:
    """One model is loaded: a request naming another is answered by it (as llama-server and LM Studio
    do: clients send names like 'gpt-3.5-turbo' for title requests), or refused with --strict-model."""
    if not isinstance(model, str):
        raise ApiError(400, f"model must be a string (got {type(model).__name__})", param="model")
    if state.strict_model and model not in state.aliases:
        raise ApiError(404, f"the model '{model}' does not exist here; this server runs '{state.model_id}' "
                            "(GET /v1/models)", type="not_found_error", param="model", code="model_not_found")


async def read_json(request: Request):
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, f"request body of {int(length)} bytes is over the limit of {MAX_BODY}")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise ApiError(413, f"request body is over the limit of {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, "the request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
