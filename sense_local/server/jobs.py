"""Requests queued on the one model: a bounded queue and one worker thread that runs each job's
conversation turn and hands its events to the request's event loop.

A client that stops reading its stream must not hold the model: once its socket's buffers are full
the response stops taking events, and the worker cancels the turn when events have waited untaken
past a bound (STALL_EVENTS for STALL_S seconds) or any event has waited WRITE_TIMEOUT_S. A reply
that is merely read slowly never falls that far behind: the model makes a few tokens a second to
dozens, the network takes them at once."""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..conversation import Conversation, ReplyEvent
from ..errors import ContextOverflowError, SenseError

DEFAULT_QUEUE = 64  # requests waiting for the model, at most (a full queue answers 503)
STALL_EVENTS = 64  # events (tokens) a response may leave untaken for STALL_S before its turn is cancelled
STALL_S = 2.0
WRITE_TIMEOUT_S = 20.0  # the longest any event may wait untaken while the turn runs


class QueueFull(Exception):
    pass


@dataclass
class Failed:
    """The turn could not run: `status` is the HTTP status it maps to."""

    status: int
    message: str


END = object()  # after a job's last event


class EventQueue(asyncio.Queue):
    """A job's events on the request's loop, counting what the response has taken and when."""

    def __init__(self):
        super().__init__()
        self.taken = 0
        self.taken_at = time.monotonic()

    async def get(self):
        item = await super().get()
        self.taken += 1
        self.taken_at = time.monotonic()
        return item

    def waiting(self, kind: type) -> list:
        """The items of type `kind` at the front of the queue, taken without waiting."""
        taken = []
        while self._queue and isinstance(self._queue[0], kind):  # asyncio.Queue's own deque
            taken.append(self.get_nowait())
        if taken:
            self.taken += len(taken)
            self.taken_at = time.monotonic()
        return taken


@dataclass
class Job:
    turn: Callable[[Conversation, threading.Event], Iterator[ReplyEvent]]  # starts the turn on the model
    loop: asyncio.AbstractEventLoop
    events: EventQueue = field(default_factory=EventQueue)  # ReplyEvent | Failed | END
    cancel: threading.Event = field(default_factory=threading.Event)
    pushed: int = 0  # events handed to the loop (the worker thread counts)
    behind_since: float = 0.0  # when the response last had taken every event pushed

    def push(self, item) -> None:
        self.push_all([item])

    def push_all(self, items: list) -> None:
        """Push `items` in one call on the loop: the response finds them all waiting together."""
        if self.pushed == self.events.taken:
            self.behind_since = time.monotonic()
        self.pushed += len(items)
        self.loop.call_soon_threadsafe(self._put_all, items)

    def _put_all(self, items: list) -> None:
        for item in items:
            self.events.put_nowait(item)

    def stalled(self) -> bool:
        """Its response has stopped taking events (a client that does not read its stream): events
        wait, and none was taken for a while."""
        waiting = self.pushed - self.events.taken
        idle = time.monotonic() - max(self.behind_since, self.events.taken_at)
        return (waiting > STALL_EVENTS and idle > STALL_S) or (waiting > 0 and idle > WRITE_TIMEOUT_S)


@dataclass
class Counters:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0  # answered 503: the queue was full
    stalled: int = 0  # cancelled because the client stopped reading its reply (also counted in cancelled)


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
        """Run the turn, pushing its events, a forward's tokens together (TokenEvent.more: the
        response then sends them as one chunk); which counter it ends in."""
        burst: list = []  # events not pushed yet: token events of one forward, up to the one that ends it
        try:
            last = None
            for last in job.turn(self.conversation, job.cancel):
                burst.append(last)
                if getattr(last, "more", False):
                    continue
                job.push_all(burst)
                burst = []
                if not job.cancel.is_set() and job.stalled():
                    job.cancel.set()  # the turn ends at its next decode: the model goes to the next job
                    self.counters.stalled += 1
            outcome = "cancelled" if getattr(last, "finish_reason", "") == "cancelled" else "completed"
        except ContextOverflowError as exc:
            burst, outcome = [*burst, Failed(413, str(exc))], "failed"
        except SenseError as exc:
            burst, outcome = [*burst, Failed(400, str(exc))], "failed"
        except Exception as exc:  # a bug: the client gets a 500 in OpenAI's shape, the server goes on
            burst, outcome = [*burst, Failed(500, f"internal error: {type(exc).__name__}: {exc}")], "failed"
        if burst:  # the turn ended inside a forward's tokens (its length, a stop string), or failed
            job.push_all(burst)
        return outcome
