"""A checked turn, from the request to its running job, for the OpenAI and Ollama routes alike: the
fill-in-the-middle prompt laid out, the job queued on the model, the client's leaving watched (it
cancels the turn), and the job's events read until its end."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request

from ..conversation import Conversation, reply_reserve
from ..errors import ContextOverflowError
from ..fim import NoFimTokens, infill_tokens
from ..speculative.types import TokenEvent
from .api_error import ApiError
from .jobs import END, Failed, Job, QueueFull
from .openai_api import TurnRequest
from .state import ServerState
from .tools_api import read_calls

RETRY_AFTER_S = 5  # told to clients when the queue is full


def fim_prompt(conversation: Conversation, turn: TurnRequest) -> bool:
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
        release(job, watcher)
        raise
    if first is END:
        watcher.cancel()
        return None
    return job, first, watcher


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


async def events(job: Job) -> AsyncIterator:
    """The job's events (ReplyEvent | Failed) until its END."""
    while (item := await job.events.get()) is not END:
        yield item


async def token_runs(job: Job) -> AsyncIterator:
    """`events` for a streamed response: a token event comes as a list, with the token events
    already waiting behind it (a forward's tokens are pushed in one call: jobs.GenerationQueue._run),
    so that they go out as one piece of text in one write. Profiled inside serve streaming the 135M,
    a chunk's socket send took 0.45 ms of a loop thread sharing the 2 cores with the decode:
    streamed replies decoded 0.977x as fast as unstreamed ones."""
    async for item in events(job):
        yield [item, *job.events.waiting(TokenEvent)] if isinstance(item, TokenEvent) else item


def release(job: Job, watcher: asyncio.Task) -> None:
    """The response is done, or the client left: stop watching it and free the model at once."""
    watcher.cancel()
    job.cancel.set()
