"""Ollama's HTTP API on the server's own port, beside OpenAI's (which Ollama also serves on its one
port, so clients such as oterm, which list models through /api/tags and chat through /v1, take one
base URL for both):

    GET  /api/tags          the loaded model            POST /api/chat       a chat turn
    POST /api/show          its details and metadata    POST /api/generate   a prompt (`suffix`: FIM)
    GET  /api/ps            what is loaded              POST /api/embed      embeddings (and /api/embeddings)
    GET  /api/version       Ollama's API version        GET  /               "Ollama is running"

Turns run on the OpenAI routes' queue and runtime (turn_jobs.start_job); replies stream as NDJSON unless
`"stream": false`. Errors are `{"error": "..."}` with the status Ollama uses; a failure mid-stream is
one such line. Request bodies are read in ollama_api.py, responses shaped in ollama_shapes.py.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from ..conversation import Finished, Prepared
from ..errors import SenseError
from .api_error import ApiError
from .embeddings_api import embed_inputs
from .error_replies import OLLAMA, exception_handlers
from .fields import json_object
from .jobs import Failed, Job
from .ollama_api import OllamaTurn, parse_chat, parse_embed, parse_generate, require_model
from .ollama_shapes import ModelCard, chat_piece, closing, generate_piece, loaded
from .request_checks import authorize, read_json
from .state import ServerState
from .turn_jobs import events, fim_prompt, release, start_job, token_runs

OLLAMA_VERSION = "0.33.0"  # the Ollama release whose API documentation these routes follow
PIECES = {"chat": chat_piece, "generate": generate_piece}


def ollama_routes(state: ServerState) -> list:
    """The routes to add to the server's own: `/` and everything under `/api`."""
    state.aliases |= {f"{name}:latest" for name in state.aliases}  # Ollama clients name models name:tag
    cards = _Cards(state)

    async def tags(request: Request) -> Response:
        authorize(state, request)
        return JSONResponse({"models": [cards.chat().listed()]})

    async def ps(request: Request) -> Response:
        authorize(state, request)
        share = _vram_share(state)
        running = [card.running(share) for card in (cards.chat(), cards.embedding()) if card is not None]
        return JSONResponse({"models": running})

    async def show(request: Request) -> Response:
        authorize(state, request)
        body = json_object(await read_json(request))
        _check_name(state, require_model(body))
        return JSONResponse(cards.chat().shown(_parameters(state)))

    async def version(request: Request) -> Response:
        return JSONResponse({"version": OLLAMA_VERSION})

    async def chat(request: Request) -> Response:
        return await _turn(state, request, "chat")

    async def generate(request: Request) -> Response:
        return await _turn(state, request, "generate")

    async def embed(request: Request) -> Response:
        return await _embed(state, request, legacy=False)

    async def embeddings(request: Request) -> Response:
        return await _embed(state, request, legacy=True)

    api = Starlette(routes=[
        Route("/tags", tags, methods=["GET"]),
        Route("/ps", ps, methods=["GET"]),
        Route("/show", show, methods=["POST"]),
        Route("/version", version, methods=["GET"]),
        Route("/chat", chat, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/embed", embed, methods=["POST"]),
        Route("/embeddings", embeddings, methods=["POST"]),
    ], exception_handlers=exception_handlers(OLLAMA))
    api.router.redirect_slashes = False

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")  # the words Ollama's clients look for

    return [Route("/", root, methods=["GET"]), Mount("/api", app=api)]


class _Cards:
    """The model entries, read from the GGUF headers once."""

    def __init__(self, state: ServerState):
        self.state = state
        self._chat: ModelCard | None = None
        self._embedding: ModelCard | None = None

    def chat(self) -> ModelCard:
        if self._chat is None:
            engine = self.state.conversation.engine
            capabilities = ["completion"] + (["insert"] if engine.fim.usable else [])
            self._chat = ModelCard(engine.path, self.state.model_id, capabilities=capabilities,
                                   context_length=engine.n_ctx)
        return self._chat

    def embedding(self) -> ModelCard | None:
        """The embedding model once a request has loaded it (it is not loaded before)."""
        if not self.state.embedder.loaded:
            return None
        if self._embedding is None:
            embedder = self.state.embedder.get()
            self._embedding = ModelCard(embedder.path, embedder.name, capabilities=["embedding"],
                                        context_length=embedder.n_ctx)
        return self._embedding


def _check_name(state: ServerState, model: str) -> None:
    """Any name is answered by the loaded model (as on the OpenAI routes), unless --strict-model."""
    if state.strict_model and model not in state.aliases:
        raise ApiError(404, f"model '{model}' not found (this server runs '{state.model_id}')")


def _parameters(state: ServerState) -> list[tuple[str, object]]:
    """The server's defaults for requests, under Ollama's option names (a Modelfile repeats `stop`)."""
    o = state.conversation.config.options
    out = [("temperature", o.temperature), ("top_k", o.top_k), ("top_p", o.top_p), ("min_p", o.min_p),
           ("num_predict", o.max_tokens), ("num_ctx", state.conversation.engine.n_ctx)]
    if state.fixed_seed:
        out.append(("seed", o.seed))
    return out + [("stop", json.dumps(stop)) for stop in o.stop]


def _vram_share(state: ServerState) -> float:
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return 0.0
    layers = state.conversation.config.gpu_layers
    n_layer = max(state.conversation.engine.n_layer, 1)
    return 1.0 if layers < 0 else min(layers, n_layer) / n_layer


async def _turn(state: ServerState, request: Request, kind: str) -> Response:
    started_ns = time.perf_counter_ns()
    authorize(state, request)
    body = await read_json(request)
    conversation = state.conversation
    parse = parse_chat if kind == "chat" else parse_generate
    asked: OllamaTurn = parse(body, conversation.config.options, conversation.engine.n_ctx,
                              fixed_seed=state.fixed_seed)
    _check_name(state, asked.model)
    if asked.load_only:
        return JSONResponse(loaded(asked.model, kind))
    cut = fim_prompt(conversation, asked.turn) if asked.turn.infill is not None else False
    if cut and not asked.truncate:
        raise ApiError(400, "the code does not fit the context (truncate is false)")
    started = await start_job(state, request, asked.turn)
    if started is None:  # the client left while it waited
        return Response(status_code=499)
    job, prepared, watcher = started
    if prepared.dropped and not asked.truncate:
        release(job, watcher)
        raise ApiError(400, f"the conversation does not fit the context of {conversation.engine.n_ctx} tokens "
                            f"(truncate is false; truncated, its {prepared.dropped} oldest messages would be left out)")
    said = {"X-Sense-Dropped-Messages": str(prepared.dropped)} if prepared.dropped else {}
    if asked.turn.stream:
        return StreamingResponse(_ndjson(job, prepared, watcher, asked.model, kind, started_ns),
                                 media_type="application/x-ndjson", headers=said)
    try:
        return JSONResponse(await _whole(job, prepared, asked.model, kind, started_ns), headers=said)
    finally:
        release(job, watcher)  # finished already, or the client left


async def _whole(job: Job, prepared: Prepared, model: str, kind: str, started_ns: int) -> dict:
    finished = None
    async for item in events(job):
        if isinstance(item, Finished):
            finished = item
        elif isinstance(item, Failed):
            raise ApiError(item.status, item.message)
    if finished is None:
        raise ApiError(500, "the generation ended without a result")
    return closing(PIECES[kind](model, finished.text), prepared, finished, started_ns)


async def _ndjson(job: Job, prepared: Prepared, watcher: asyncio.Task, model: str, kind: str,
                  started_ns: int) -> AsyncIterator[str]:
    piece = PIECES[kind]
    try:
        async for item in token_runs(job):
            if isinstance(item, list):  # token events that came together: one piece
                text = "".join(ev.text for ev in item)
                if text:
                    yield _line(piece(model, text))
            elif isinstance(item, Finished):
                yield _line(closing(piece(model, ""), prepared, item, started_ns))
            elif isinstance(item, Failed):
                yield _line({"error": item.message})
    finally:  # finished, or the client left mid-stream: either way the model is freed at once
        release(job, watcher)


def _line(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False) + "\n"


async def _embed(state: ServerState, request: Request, *, legacy: bool) -> Response:
    """/api/embed ({"embeddings": [[...], ...]} with figures) or the older /api/embeddings
    ({"embedding": [...]}, one prompt), from the server's embedding model."""
    started_ns = time.perf_counter_ns()
    authorize(state, request)
    asked = parse_embed(await read_json(request), legacy=legacy)
    if asked.request is None:  # nothing to embed: Ollama's way to load the model
        return JSONResponse({"embedding": []} if legacy else {"model": asked.model, "embeddings": []})
    load_ns = 0
    if not state.embedder.loaded:
        try:
            await asyncio.to_thread(state.embedder.get)
        except SenseError:
            pass  # embed_inputs answers 503 with the reason
        load_ns = time.perf_counter_ns() - started_ns
    embedder, result = await embed_inputs(state, asked.request, asked.model.removesuffix(":latest"))
    if result.truncated and not asked.truncate:
        raise ApiError(400, f"input[{result.truncated[0]}] exceeds the embedding model's context of "
                            f"{embedder.n_ctx} tokens (truncate is false)")
    vectors = [v.tolist() for v in result.vectors]
    if legacy:
        return JSONResponse({"embedding": vectors[0]})
    return JSONResponse({"model": asked.model, "embeddings": vectors,
                         "total_duration": time.perf_counter_ns() - started_ns, "load_duration": load_ns,
                         "prompt_eval_count": result.tokens})
