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
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from ..conversation import Conversation, Finished, Prepared, reply_reserve
from ..embeddings import LazyEmbedder
from ..errors import ContextOverflowError, SenseError
from ..fim import NoFimTokens, infill_tokens
from ..speculative.types import TokenEvent
from .embeddings_api import EmbeddingRequest, embeddings_response, parse_embeddings, tokens_of
from .guard import GuardMiddleware, HostPolicy
from .infill import infill_chunk, infill_result, parse_infill
from .jobs import END, Failed, GenerationQueue, Job, QueueFull
from .tools_api import CallPieces, add_tool_calls, call_chunks, parse_tools, read_calls
from .logprobs_api import chat_entries, completion_logprobs
from .openai_api import (ApiError, TurnRequest, choice, envelope, finish_reason, new_id, parse_turn, sense_stats,
                         usage)

MAX_BODY = 4 * 2**20  # bytes of request body accepted (a prompt this long would not fit any context anyway)
RETRY_AFTER_S = 5  # told to clients when the queue is full


class ServerState:
    def __init__(self, conversation: Conversation, *, model_id: str, aliases: set[str], api_key: str | None,
                 queue_size: int, strict_model: bool = False, fixed_seed: bool = False,
                 embedder: LazyEmbedder | None = None):
        self.conversation = conversation
        self.model_id = model_id
        self.aliases = aliases | {model_id}
        self.strict_model = strict_model  # a request naming another model gets 404 (else: the loaded one answers)
        self.fixed_seed = fixed_seed  # requests without a seed use the configured one (else: a random one each)
        self.api_key = api_key
        self.queue = GenerationQueue(conversation, queue_size)
        self.embedder = embedder or LazyEmbedder()  # loaded on the first /v1/embeddings request, then kept


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
        body = {"error": message} if scope["path"].startswith("/api/") else \
            ApiError(status, message, type="invalid_request_error").body()
        await JSONResponse(body, status_code=status)(scope, receive, send)

    return respond


def _routes(state: ServerState) -> Starlette:
    def model_object() -> dict:
        created = int(state.conversation.model_path.stat().st_mtime)
        return {"id": state.model_id, "object": "model", "created": created, "owned_by": "sense-local"}

    async def models(request: Request) -> Response:
        _authorize(state, request)
        return JSONResponse({"object": "list", "data": [model_object()]})

    async def model(request: Request) -> Response:
        _authorize(state, request)
        _check_model(state, request.path_params["model"])
        return JSONResponse(model_object())

    async def health(request: Request) -> Response:
        q = state.queue
        said = {"status": "error", "error": q.broken} if q.broken else {"status": "ok"}  # broken: an RPC worker lost
        return JSONResponse({**said, "model": state.model_id, "running": q.running is not None,
                             "waiting": q.waiting, **q.counters.__dict__})

    async def chat(request: Request) -> Response:
        return await _turn(state, request, "chat")

    async def completions(request: Request) -> Response:
        return await _turn(state, request, "completion")

    async def infill(request: Request) -> Response:
        return await _turn(state, request, "infill")

    async def embeddings(request: Request) -> Response:
        return await _embeddings(state, request)

    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code,
                            headers=exc.headers)  # a 405 says what is Allowed

    async def on_crash(request: Request, exc: Exception) -> Response:
        return JSONResponse(ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error").body(),
                            status_code=500)

    from .ollama_routes import ollama_routes  # here: it uses this module's helpers

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/infill", infill, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        *ollama_routes(state),  # Ollama's API beside OpenAI's, on the same port (ollama_routes.py)
    ]
    handlers = {ApiError: on_api_error, HTTPException: on_http_error, Exception: on_crash}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state.queue.close()
        state.embedder.close()

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.router.redirect_slashes = False  # its redirect would echo the request's Host back as a URL
    return app


def _authorize(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:].strip() if given.lower().startswith("bearer ") else ""
    if not secrets.compare_digest(token.encode(), state.api_key.encode()):
        raise ApiError(401, "missing or wrong API key (send it as 'Authorization: Bearer KEY')",
                       type="invalid_request_error", code="invalid_api_key")


def _check_model(state: ServerState, model) -> None:
    """One model is loaded: a request naming another is answered by it (as llama-server and LM Studio
    do: clients send names like 'gpt-3.5-turbo' for title requests), or refused with --strict-model."""
    if not isinstance(model, str):
        raise ApiError(400, f"model must be a string (got {type(model).__name__})", param="model")
    if state.strict_model and model not in state.aliases:
        raise ApiError(404, f"the model '{model}' does not exist here; this server runs '{state.model_id}' "
                            "(GET /v1/models)", type="not_found_error", param="model", code="model_not_found")


async def _read_json(request: Request):
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


async def _turn(state: ServerState, request: Request, kind: str) -> Response:
    _authorize(state, request)
    body = await _read_json(request)
    model = body.get("model") if isinstance(body, dict) else None
    if model is not None:
        _check_model(state, model)
    conversation = state.conversation
    defaults, n_ctx = conversation.config.options, conversation.engine.n_ctx
    turn = (parse_infill(body, defaults, n_ctx, fixed_seed=state.fixed_seed) if kind == "infill" else
            parse_turn(body, kind, defaults, n_ctx, fixed_seed=state.fixed_seed))
    if kind == "chat":
        turn.tools = parse_tools(body, turn, conversation.engine)
    truncated = _fim_prompt(conversation, turn) if turn.infill is not None else False
    started = await start_job(state, request, turn)
    if started is None:  # cancelled while waiting
        return Response(status_code=499)
    job, first, watcher = started
    rid = new_id(kind)
    # older messages left out to fit the context: said in a header (and a field), never silently
    said = {"X-Sense-Dropped-Messages": str(first.dropped)} if first.dropped else {}
    if turn.stream:
        return StreamingResponse(_sse(state, turn, job, first, rid, watcher, truncated),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **said})
    try:
        return JSONResponse(await _whole(state, turn, job, first, rid, truncated), headers=said)
    finally:
        watcher.cancel()
        job.cancel.set()  # finished already, or the client left


async def start_job(state: ServerState, request: Request, turn: TurnRequest):
    """Queue the turn and wait until its prompt is built: (job, Prepared, the disconnect watcher), or
    None when the client left while it waited. ApiError for a full queue or a turn that failed first."""
    job = Job(_starter(turn), asyncio.get_running_loop())
    try:
        state.queue.submit(job)
    except QueueFull:
        raise ApiError(503, "the server is busy: too many requests are waiting for the model; retry shortly",
                       type="server_error", code="queue_full", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        first = await job.events.get()  # the prompt is built (or the request failed) before any status is sent
        if isinstance(first, Failed):
            raise ApiError(first.status, first.message, type="server_error" if first.status >= 500 else
                           "invalid_request_error", code="context_length_exceeded" if first.status == 413 else None)
    except BaseException:
        watcher.cancel()
        job.cancel.set()
        raise
    if first is END:
        watcher.cancel()
        return None
    return job, first, watcher


async def _embeddings(state: ServerState, request: Request) -> Response:
    """The embedding model (loaded on first use, in a worker thread, beside the chat model's queue):
    each input embedded as the model pools it, unit length, in input order."""
    _authorize(state, request)
    body = await _read_json(request)
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


def _fim_prompt(conversation: Conversation, turn: TurnRequest) -> bool:
    """Lay out the turn's fill-in-the-middle prompt in `turn.tokens` (fim.py), leaving the reply its
    room; whether some of the code was left out to fit. A model without FIM tokens: 400 (an empty
    `suffix` on /v1/completions asks for nothing after the prompt: a plain continuation)."""
    engine = conversation.engine
    if turn.kind == "completion" and not turn.infill.suffix and not engine.fim.usable:
        turn.infill = None
        return False
    try:
        built = infill_tokens(engine, turn.infill, engine.n_ctx - reply_reserve(engine, turn.options))
    except NoFimTokens as exc:
        raise ApiError(400, str(exc), param="input_suffix" if turn.kind == "infill" else "suffix",
                       code="no_fim_tokens") from None
    except ContextOverflowError as exc:
        raise ApiError(413, str(exc), code="context_length_exceeded") from None
    turn.tokens = built.tokens
    return built.truncated


def _starter(turn: TurnRequest):
    def start(conversation: Conversation, cancel):
        if turn.kind == "chat" and turn.tools is not None:
            events = conversation.reply(turn.messages, options=turn.options, grounded=turn.grounded, cancel=cancel,
                                        tools=turn.tools.tools)
            return read_calls(events, turn.tools, cancel)
        if turn.kind == "chat":
            return conversation.reply(turn.messages, options=turn.options, grounded=turn.grounded, cancel=cancel)
        prompt = turn.tokens if turn.tokens is not None else turn.prompt  # FIM: laid out already
        return conversation.complete(prompt, options=turn.options, cancel=cancel)

    return start


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """The body is read: the next ASGI message is the client leaving."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel.set()
            return


async def _events(job: Job) -> AsyncIterator:
    while (item := await job.events.get()) is not END:
        yield item


async def _whole(state: ServerState, turn: TurnRequest, job: Job, prepared: Prepared, rid: str,
                 truncated: bool) -> dict:
    finished, scored = None, []
    async for item in _events(job):
        if isinstance(item, TokenEvent):
            if item.logprob is not None:
                scored.append((item.token, item.logprob))
        elif isinstance(item, Finished):
            finished = item
        elif isinstance(item, Failed):
            raise ApiError(item.status, item.message, type="server_error")
    if finished is None:
        raise ApiError(500, "the generation ended without a result", type="server_error")
    if turn.kind == "infill":
        return infill_result(state.model_id, finished, prepared.prompt_tokens, truncated)
    doc = envelope(turn.kind, rid, state.model_id, chunk=False)
    echoed = turn.prompt if turn.echo else ""
    doc["choices"] = [choice(turn.kind, echoed + finished.text, chunk=False, finish=finish_reason(finished),
                             logprobs=_logprobs(state, turn, scored, len(echoed)))]
    add_tool_calls(doc["choices"][0], finished)
    doc["usage"] = usage(prepared.prompt_tokens, finished.stats)
    doc["sense"] = sense_stats(finished.stats)
    doc["sources"] = [s.to_dict() for s in prepared.sources]
    doc["dropped_messages"] = prepared.dropped
    return doc


async def _sse(state: ServerState, turn: TurnRequest, job: Job, prepared: Prepared, rid: str,
               watcher: asyncio.Task, truncated: bool) -> AsyncIterator[str]:
    if turn.kind == "infill":
        async for line in _infill_sse(state, job, prepared, watcher, truncated):
            yield line
        return
    sent = 0  # characters of text streamed so far (completions' text_offset)
    scored = []  # log-probabilities of tokens whose text has not gone out yet (mid-character)

    def chunk(text: str, *, finish: str | None = None, first: bool = False, **extra) -> str:
        nonlocal sent, scored
        doc = envelope(turn.kind, rid, state.model_id, chunk=True)
        logprobs = _logprobs(state, turn, scored, sent) if scored else None
        doc["choices"] = [choice(turn.kind, text, chunk=True, finish=finish, first=first, logprobs=logprobs)]
        doc.update(extra)
        sent, scored = sent + len(text), []
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    try:
        yield chunk(turn.prompt if turn.echo else "", first=True, sources=[s.to_dict() for s in prepared.sources],
                    dropped_messages=prepared.dropped)
        async for item in _events(job):
            if isinstance(item, TokenEvent):
                if item.logprob is not None:
                    scored.append((item.token, item.logprob))
                if item.text:
                    yield chunk(item.text)
            elif isinstance(item, CallPieces):
                for line in call_chunks(envelope(turn.kind, rid, state.model_id, chunk=True), item):
                    yield line
            elif isinstance(item, Finished):
                yield chunk("", finish=finish_reason(item), sense=sense_stats(item.stats))
                if turn.include_usage:
                    doc = envelope(turn.kind, rid, state.model_id, chunk=True)
                    doc.update(choices=[], usage=usage(prepared.prompt_tokens, item.stats))
                    yield f"data: {json.dumps(doc)}\n\n"
            elif isinstance(item, Failed):
                yield f"data: {json.dumps(ApiError(item.status, item.message, type='server_error').body())}\n\n"
        yield "data: [DONE]\n\n"
    finally:  # finished, or the client left mid-stream: either way the model is freed at once
        watcher.cancel()
        job.cancel.set()


def _logprobs(state: ServerState, turn: TurnRequest, scored: list, offset: int) -> dict | None:
    """The reply's (or chunk's) log-probabilities in the request kind's shape; None when not asked."""
    if turn.options.logprobs is None:
        return None
    piece = state.conversation.engine.piece
    if turn.kind == "chat":
        return {"content": chat_entries(scored, piece), "refusal": None}
    return completion_logprobs(scored, piece, turn.options.logprobs, offset)


async def _infill_sse(state: ServerState, job: Job, prepared: Prepared, watcher: asyncio.Task,
                      truncated: bool) -> AsyncIterator[str]:
    """/infill streamed as llama-server streams it: one `data:` object per piece of text, the last
    with `"stop": true` and the figures, no `[DONE]`."""
    def line(doc: dict) -> str:
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n"

    try:
        async for item in _events(job):
            if isinstance(item, TokenEvent):
                if item.text:
                    yield line(infill_chunk(item.text))
            elif isinstance(item, Finished):
                last = infill_result(state.model_id, item, prepared.prompt_tokens, truncated)
                yield line({**last, "content": ""})  # the text went out piece by piece
            elif isinstance(item, Failed):
                yield line(ApiError(item.status, item.message, type="server_error").body())
    finally:
        watcher.cancel()
        job.cancel.set()
