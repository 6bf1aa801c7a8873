"""POST /v1/embeddings in OpenAI's shape, answered by the server's embedding model (embeddings.py).

    {"input": "text" | ["text", ...] | [token, ...] | [[token, ...], ...], "model": "...",
     "encoding_format": "float" | "base64", "dimensions": N, "user": "..."}
    -> {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...] | "base64"}],
        "model": id, "usage": {"prompt_tokens": n, "total_tokens": n}}

Token arrays are ids of the embedding model's own vocabulary (as llama-server reads them), not of
OpenAI's tokenizer. `dimensions` other than the model's own is a 400: the default model was not
trained to be cut shorter (it is no Matryoshka model), so a shortened vector would only pretend.
Extra: `truncated`, the indices of inputs cut to the model's context, present only when some were.
"""
from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..embeddings import Embedded, Embedder
from ..errors import SenseError
from .api_error import ApiError
from .fields import json_object
from .request_checks import authorize, read_json
from .state import ServerState

MAX_INPUTS = 2048  # inputs per request, as OpenAI allows
FORMATS = ("float", "base64")


@dataclass
class EmbeddingRequest:
    texts: list  # [n] each a str, or a list of token ids
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_embeddings(body) -> EmbeddingRequest:
    """Check a /v1/embeddings body; ApiError(400) names the bad field."""
    body = json_object(body)
    if "input" not in body:
        raise ApiError(400, "input is required: a string, a list of strings, or token ids", param="input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in FORMATS:
        raise ApiError(400, f"encoding_format must be 'float' or 'base64' (got {fmt!r})", param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise ApiError(400, f"dimensions must be a positive integer (got {dims!r})", param="dimensions")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise ApiError(400, f"user must be a string (got {user!r})", param="user")
    return EmbeddingRequest(_inputs(body["input"]), fmt, dims)


def _inputs(value) -> list:
    if isinstance(value, str):
        value = [value]
    elif _token_list(value):  # one input given as token ids
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "input must be a non-empty string, a non-empty list of strings, or token ids",
                       param="input")
    if len(value) > MAX_INPUTS:
        raise ApiError(400, f"input: at most {MAX_INPUTS} inputs per request (got {len(value)})", param="input")
    for i, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise ApiError(400, f"input[{i}] is an empty string", param="input")
        elif not (_token_list(item) and item):
            raise ApiError(400, f"input[{i}] must be a non-empty string or a non-empty list of token ids",
                           param="input")
    return value


def _token_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value) and \
        bool(value)


def tokens_of(embedder: Embedder, request: EmbeddingRequest) -> list[list[int]]:
    """Each input as the model's tokens; token ids out of its vocabulary are a 400."""
    out = []
    for i, item in enumerate(request.texts):
        if isinstance(item, str):
            out.append(embedder.tokenize(item))
            continue
        bad = next((t for t in item if not 0 <= t < embedder.n_vocab), None)
        if bad is not None:
            raise ApiError(400, f"input[{i}]: token id {bad} is not in the embedding model's vocabulary "
                                f"(0..{embedder.n_vocab - 1})", param="input")
        out.append(embedder.wrap(item))
    if request.dimensions is not None and request.dimensions != embedder.dim:
        raise ApiError(400, f"dimensions: the embedding model '{embedder.name}' gives {embedder.dim}-dimensional "
                            "vectors and was not trained to be shortened; send dimensions unset or "
                            f"{embedder.dim}", param="dimensions")
    return out


def embeddings_response(model_id: str, result: Embedded, encoding_format: str) -> dict:
    data = []
    for i, vec in enumerate(result.vectors):
        if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            value = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vec.astype(np.float64).tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    doc = {"object": "list", "data": data, "model": model_id,
           "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens}}
    if result.truncated:
        doc["truncated"] = result.truncated
    return doc


async def embeddings_route(state: ServerState, request: Request) -> Response:
    """The embedding model (loaded on first use, in a worker thread, beside the chat model's queue):
    each input embedded as the model pools it, unit length, in input order."""
    authorize(state, request)
    body = await read_json(request)
    parsed = parse_embeddings(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, f"model must be a string (got {model!r})", param="model")
    embedder, result = await embed_inputs(state, parsed, model)
    return JSONResponse(embeddings_response(embedder.name, result, parsed.encoding_format))


async def embed_inputs(state: ServerState, parsed: EmbeddingRequest, model: str | None):
    """(the embedder, its Embedded) for checked inputs: 503 without an embedding model, 404 for
    another model's name with --strict-model."""
    try:
        embedder = await asyncio.to_thread(state.embedder.get)
    except SenseError as exc:
        raise ApiError(503, f"no embedding model: {exc}", type="server_error", code="embedding_model_unavailable") \
            from None
    if model is not None and state.strict_model and model not in (embedder.name, embedder.path.name,
                                                                   embedder.path.stem, "embedding"):
        raise ApiError(404, f"the model '{model}' does not exist here; embeddings come from '{embedder.name}'",
                       type="not_found_error", param="model", code="model_not_found")
    tokens = tokens_of(embedder, parsed)
    return embedder, await asyncio.to_thread(embedder.embed, tokens)
