"""The OpenAI-compatible HTTP server: Starlette routes over the generation queue.

    GET  /v1/models             the loaded model
    GET  /v1/models/{id}        the loaded model (404 for another name with --strict-model)
    POST /v1/chat/completions   a chat turn (grounded on the store when the server has one)
    POST /v1/completions        a raw continuation (with `suffix`: fill-in-the-middle)
    POST /infill                llama-server's fill-in-the-middle (code completion at a cursor, infill.py)
    POST /v1/embeddings         sentence embeddings from a second, small model (embeddings_api.py)
    GET  /health                {"status": "ok", ...} with the queue's counters

Every error is JSON in OpenAI's shape; a client that disconnects cancels its generation. Requests from
web pages are kept out by guard.py.

This module is the route table. A request is checked in request_checks.py (key, model, body) and
openai_api.py (fields), run by turn_jobs.py on the queue of jobs.py, and answered by openai_replies.py;
errors in either API's shape come from error_replies.py; state.py holds what every route reads.
"""
from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from .api_error import ApiError
from .embeddings_api import embeddings_route
from .error_replies import OPENAI, error_response, exception_handlers, shape_of
from .guard import GuardMiddleware, HostPolicy
from .infill import parse_infill
from .ollama_routes import ollama_routes
from .openai_api import new_id, parse_turn
from .openai_replies import streamed_reply, whole_reply
from .request_checks import authorize, check_model, read_json
from .state import ServerState
from .tools_api import parse_tools
from .turn_jobs import fim_prompt, release, start_job


def build_app(state: ServerState, policy: HostPolicy | None = None) -> ASGIApp:
    """The routes, behind the guard (guard.py: Host, Origin, Content-Type) and, for origins given
    with --cors, CORS headers."""
    app = _routes(state)
    guarded = GuardMiddleware(app, policy or HostPolicy("127.0.0.1"), _deny)
    if policy is not None and policy.cors:
        return CORSMiddleware(guarded, allow_origins=sorted(policy.cors), allow_methods=["GET", "POST"],
                              allow_headers=["Authorization", "Content-Type"])
    return guarded


def _deny(status: int, message: str):
    async def respond(scope, receive, send) -> None:  # Ollama's routes answer in Ollama's error shape
        await error_response(shape_of(scope["path"]), ApiError(status, message))(scope, receive, send)

    return respond


def _routes(state: ServerState) -> Starlette:
    def model_object() -> dict:
        created = int(state.conversation.model_path.stat().st_mtime)
        return {"id": state.model_id, "object": "model", "created": created, "owned_by": "sense-local"}

    async def models(request: Request) -> Response:
        authorize(state, request)
        return JSONResponse({"object": "list", "data": [model_object()]})

    async def model(request: Request) -> Response:
        authorize(state, request)
        check_model(state, request.path_params["model"])
        return JSONResponse(model_object())

    async def health(request: Request) -> Response:
        q = state.queue
        said = {"status": "error", "error": q.broken} if q.broken else {"status": "ok"}  # broken: an RPC worker lost
        return JSONResponse({**said, "model": state.model_id, "running": q.running is not None,
                             "waiting": q.waiting, **q.counters.__dict__})

    def turn(kind: str):
        async def endpoint(request: Request) -> Response:
            return await _turn(state, request, kind)

        return endpoint

    async def embeddings(request: Request) -> Response:
        return await embeddings_route(state, request)

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", turn("chat"), methods=["POST"]),
        Route("/v1/completions", turn("completion"), methods=["POST"]),
        Route("/infill", turn("infill"), methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        *ollama_routes(state),  # Ollama's API beside OpenAI's, on the same port (ollama_routes.py)
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.queue.close()
        state.embedder.close()

    app = Starlette(routes=routes, exception_handlers=exception_handlers(OPENAI), lifespan=lifespan)
    app.router.redirect_slashes = False  # its redirect would echo the request's Host back as a URL
    return app


async def _turn(state: ServerState, request: Request, kind: str) -> Response:
    authorize(state, request)
    body = await read_json(request)
    model = body.get("model") if isinstance(body, dict) else None
    if model is not None:
        check_model(state, model)
    conversation = state.conversation
    defaults, n_ctx = conversation.config.options, conversation.engine.n_ctx
    turn = (parse_infill(body, defaults, n_ctx, fixed_seed=state.fixed_seed) if kind == "infill" else
            parse_turn(body, kind, defaults, n_ctx, fixed_seed=state.fixed_seed))
    if kind == "chat":
        turn.tools = parse_tools(body, turn, conversation.engine)
    truncated = fim_prompt(conversation, turn) if turn.infill is not None else False
    started = await start_job(state, request, turn)
    if started is None:  # cancelled while waiting
        return Response(status_code=499)
    job, first, watcher = started
    rid = new_id(kind)
    # older messages left out to fit the context: said in a header (and a field), never silently
    said = {"X-Sense-Dropped-Messages": str(first.dropped)} if first.dropped else {}
    if turn.stream:
        return StreamingResponse(streamed_reply(state, turn, job, first, rid, watcher, truncated),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **said})
    try:
        return JSONResponse(await whole_reply(state, turn, job, first, rid, truncated), headers=said)
    finally:
        release(job, watcher)  # finished already, or the client left
