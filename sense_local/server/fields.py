"""Checks of one request field, shared by every route's parser (OpenAI's, /infill's, Ollama's):
each returns the value (or its default) or raises ApiError(400) naming the field. On Ollama's routes
the error's `param` is not shown (error_replies.py: Ollama's shape is the message alone)."""
from __future__ import annotations

from .api_error import ApiError


def json_object(body) -> dict:
    """The request body, which must be a JSON object."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def string_field(body: dict, key: str) -> str:
    """A text field; "" when it is absent or null."""
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a string (got {type(value).__name__})", param=key)
    return value


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def typed(body: dict, key: str, kind: type, default):
    """A field of one JSON type (bool, int, str, dict); `default` when absent or null."""
    value = body.get(key, default)
    if value is None or value is default:
        return default
    if kind is int and not is_int(value) or not isinstance(value, kind):
        raise ApiError(400, f"{key} must be of type {kind.__name__} (got {value!r})", param=key)
    return value


def number(body: dict, key: str, default):
    """A number; a whole one where the default is an int; `default` when absent or null."""
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(default, int) and
                                                                          not isinstance(value, int)):
        raise ApiError(400, f"{key} must be a {'whole ' if isinstance(default, int) else ''}number (got {value!r})",
                       param=key)
    return value
