"""How the server answers an error, in the shape of the API the request came in by: OpenAI's
`{"error": {"message", "type", "param", "code"}}`, or Ollama's `{"error": "..."}` under /api/.

One set of Starlette exception handlers serves both route families, each with its ErrorShape:
an ApiError as raised, Starlette's own HTTP errors (404, 405: the latter says what is Allowed in
its headers) and any other exception (a bug: a 500 naming it, and the server goes on)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .api_error import ApiError


@dataclass(frozen=True)
class ErrorShape:
    """How one API family words an error."""

    body: Callable[[ApiError], dict]  # the JSON body of an error response
    http_detail: Callable[[str], str] = str  # the words of Starlette's own errors ("Not Found", ...)


OPENAI = ErrorShape(ApiError.body)
OLLAMA = ErrorShape(lambda exc: {"error": exc.message}, str.lower)


def shape_of(path: str) -> ErrorShape:
    """Ollama's routes (everything under /api/) answer in Ollama's shape, the rest in OpenAI's."""
    return OLLAMA if path.startswith("/api/") else OPENAI


def error_response(shape: ErrorShape, exc: ApiError) -> Response:
    return JSONResponse(shape.body(exc), status_code=exc.status, headers=exc.headers)


def exception_handlers(shape: ErrorShape) -> dict:
    """Starlette's `exception_handlers` for routes that answer in `shape`."""
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return error_response(shape, exc)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(shape, ApiError(exc.status_code, shape.http_detail(str(exc.detail)), type=kind,
                                              headers=exc.headers))  # a 405 says what is Allowed

    async def on_crash(request: Request, exc: Exception) -> Response:
        return error_response(shape, ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error"))

    return {ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash}
