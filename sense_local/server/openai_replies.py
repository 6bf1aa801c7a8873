"""The OpenAI routes' responses to a running turn: the whole reply as one JSON object, or streamed
as server-sent events (`data: {...}` chunks, then `data: [DONE]`); /infill's in llama-server's
shape (infill.py). Either way the model is freed as soon as the response ends or the client leaves."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from ..conversation import Finished, Prepared
from ..speculative.types import TokenEvent
from .api_error import ApiError
from .infill import infill_chunk, infill_result
from .jobs import Failed, Job
from .logprobs_api import chat_entries, completion_logprobs
from .openai_api import TurnRequest, choice, envelope, finish_reason, sense_stats, usage
from .state import ServerState
from .tools_api import CallPieces, add_tool_calls, call_chunks
from .turn_jobs import events, release, token_runs


async def whole_reply(state: ServerState, turn: TurnRequest, job: Job, prepared: Prepared, rid: str,
                      truncated: bool) -> dict:
    finished, scored = None, []
    async for item in events(job):
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


async def streamed_reply(state: ServerState, turn: TurnRequest, job: Job, prepared: Prepared, rid: str,
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
        async for item in token_runs(job):
            if isinstance(item, list):  # token events that came together: one chunk
                scored += [(ev.token, ev.logprob) for ev in item if ev.logprob is not None]
                text = "".join(ev.text for ev in item)
                if text:
                    yield chunk(text)
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
        release(job, watcher)


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
        async for item in token_runs(job):
            if isinstance(item, list):  # token events that came together: one piece
                text = "".join(ev.text for ev in item)
                if text:
                    yield line(infill_chunk(text))
            elif isinstance(item, Finished):
                last = infill_result(state.model_id, item, prepared.prompt_tokens, truncated)
                yield line({**last, "content": ""})  # the text went out piece by piece
            elif isinstance(item, Failed):
                yield line(ApiError(item.status, item.message, type="server_error").body())
    finally:
        release(job, watcher)
