"""Requests queued on the one model: a bounded queue and one worker thread that runs each job's
conversation turn and hands its events to the request's event loop."""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..conversation import Conversation, ReplyEvent
from ..errors import ContextOverflowError, SenseError

DEFAULT_QUEUE = 64  # requests waiting for the model, at most (a full queue answers 503)


class QueueFull(Exception):
    pass


@dataclass
class Failed:
    """The turn could not run: `status` is the HTTP status it maps to."""

    status: int
    message: str


END = object()  # after a job's last event


@dataclass
class Job:
    turn: Callable[[Conversation, threading.Event], Iterator[ReplyEvent]]  # starts the turn on the model
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # ReplyEvent | Failed | END
    cancel: threading.Event = field(default_factory=threading.Event)

    def push(self, item) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass
class Counters:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0  # answered 503: the queue was full


class GenerationQueue:
    def __init__(self, conversation: Conversation, maxsize: int = DEFAULT_QUEUE):
        if maxsize < 1:
            raise SenseError(f"--queue must be at least 1 (got {maxsize})")
        self.conversation = conversation
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize)
        self.running: Job | None = None
        self.counters = Counters()
        self.broken: str | None = None  # why the model can serve no more requests (an RPC worker lost)
        self._thread = threading.Thread(target=self._work, name="sense-generation", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self.broken is not None:
            self.counters.failed += 1
            job.push(Failed(503, self.broken))
            job.push(END)
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.counters.rejected += 1
            raise QueueFull from None

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if self.running is not None:
            self.running.cancel.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def fail_all(self, message: str) -> None:
        """The model is gone for good (rpc_loss.py: its generation thread never returns): the running
        job, the waiting ones and every later one end with a 503 saying `message`."""
        self.broken = message
        if (running := self.running) is not None:
            self.counters.failed += 1
            running.push(Failed(503, message))
            running.push(END)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self.counters.failed += 1
                job.push(Failed(503, message))
                job.push(END)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancel.is_set():  # its client left while it waited
                self.counters.cancelled += 1
                job.push(END)
                continue
            self.running = job
            try:
                outcome = self._run(job)
            finally:
                self.running = None
            setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
            job.push(END)

    def _run(self, job: Job) -> str:
        """Run the turn, pushing its events; which counter it ends in."""
        try:
            last = None
            for last in job.turn(self.conversation, job.cancel):
                job.push(last)
            return "cancelled" if getattr(last, "finish_reason", "") == "cancelled" else "completed"
        except ContextOverflowError as exc:
            job.push(Failed(413, str(exc)))
        except SenseError as exc:
            job.push(Failed(400, str(exc)))
        except Exception as exc:  # a bug: the client gets a 500 in OpenAI's shape, the server goes on
            job.push(Failed(500, f"internal error: {type(exc).__name__}: {exc}"))
        return "failed"
