"""One conversation runtime for every front end: `generate`, `ask`, the line chat, the TUI and the
OpenAI-compatible server only render what it yields.

A Conversation owns the engine, the document store, the grounding, the speculator (what speculative
decoding keeps across replies: speculative/speculator.py) and the latest reply's decoder. A turn takes the
history (OpenAI-style messages, the new user message last) and yields, in order:

    Prepared     the prompt is built: the sources it is grounded on, notes for the user, turns dropped
    TokenEvent   one per generated token (its text held back while it could begin a stop string)
    Finished     the reply's text, its statistics and why it ended

A bad request (empty message, a prompt that does not fit, a bad option) raises SenseError at the
first `next()`, before anything is decoded. Setting `cancel` or closing the generator stops the
reply between two decodes; the engine then holds no half-made state. One turn runs at a time.
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .chat_template import chat_tokens, fit_chat
from .engine import Engine
from .errors import SenseError
from .generation import GenerationOptions, make_decoder, open_store, prompt_tokens
from .grounding.chat import DEFAULT_PASSAGES, GroundedChat
from .grounding.memory import GroundingMemory
from .grounding.prompt import DEFAULT_BUDGET
from .grounding.retrieve import DEFAULT_RANKER
from .grounding.sources import Source
from .kv_disk import DEFAULT_MIB as DISK_MIB
from .kv_disk import disk_states, memory_file
from .kv_slots import DEFAULT_MIB
from .prefill_reuse import keep_on_disk
from .reply_history import LOCAL_OWNER, ReplyHistory
from .speculative.speculator import Speculator
from .speculative.types import TARGET, GenerationStats, TokenEvent
from .stop_text import StopText


@dataclass(frozen=True, kw_only=True)
class ConversationConfig:
    """Everything a front end decides about a conversation, named."""

    model: str | None = None  # GGUF path or registry name (None: $SENSE_MODEL or the default model)
    n_ctx: int = 4096
    threads: int | None = None  # None: all cores, up to 8
    gpu_layers: int = 0  # layers offloaded to Metal/CUDA (-1: all); with rpc, to the workers (0: split by memory)
    rpc: tuple[str, ...] = ()  # HOST:PORT of llama.cpp RPC workers holding layers of the model (rpc.py)
    store: str | None = None  # document store directory (None: no documents)
    options: GenerationOptions = field(default_factory=GenerationOptions)
    system: str = ""  # system prompt before every conversation that brings none
    grounded: bool = True  # with a store: retrieve passages into each question and cite them
    passages: int = DEFAULT_PASSAGES
    budget: int = DEFAULT_BUDGET  # prompt tokens spent on passages, at most
    ranker: str = DEFAULT_RANKER
    gate: bool = True  # leave the documents out of questions they are not about (grounding/retrieve.py)
    cache_ram_mib: int = DEFAULT_MIB  # saved states of conversations set aside by other requests (kv_slots.py)
    cache_disk_mib: int = DISK_MIB  # chat turns' states kept on disk for later runs (kv_disk.py)
    history: bool = True  # keep every reply in the model's reply history, which SENSE drafts from (reply_history.py)
    history_owner: str = LOCAL_OWNER  # whose history (a server's: one per API key, reply_history.owner_for_key)
    # one turn and the process ends (`generate`, `ask`): the weights' plain layout (plain_layout.py) is
    # opened by the first decode long enough to run there, not at start, so a short prompt never pays it
    one_shot: bool = False

    def __post_init__(self):
        if self.cache_ram_mib < 0:
            raise SenseError(f"--cache-ram must be 0 or more MiB (got {self.cache_ram_mib})")
        if self.cache_disk_mib < 0:
            raise SenseError(f"--cache-disk must be 0 or more MiB (got {self.cache_disk_mib})")

    def replace(self, **changes) -> "ConversationConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class Prepared:
    prompt_tokens: int
    sources: list[Source] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the user: indexing still running, turns dropped, ...
    dropped: int = 0  # oldest messages left out to fit the context


@dataclass
class Finished:
    text: str  # the reply as shown (stop string excluded)
    stats: GenerationStats
    finish_reason: str  # "stop" (end of turn or a stop string), "length" (max_tokens or the context), "cancelled"

    def summary(self) -> str:
        """The one-line figures every front end shows under a reply."""
        s = self.stats
        parts = [f"{s.tokens} token" + ("" if s.tokens == 1 else "s")]
        if s.tokens > 1 and s.tok_per_s > 0:  # a one-token reply's speed after its first token means nothing
            parts.append(f"{s.tok_per_s:.1f} tok/s")
        parts += [f"tau {s.tau:.2f}", f"accepted {s.accepted}/{s.drafted}", s.method]
        return " · ".join(parts) + (" · stopped" if self.finish_reason == "cancelled" else "")


ReplyEvent = Prepared | TokenEvent | Finished


def reply_reserve(engine: Engine, options: GenerationOptions) -> int:
    """Context kept free for the reply when older turns are dropped."""
    return min(options.max_tokens, engine.n_ctx // 4)


class Conversation:
    def __init__(self, engine: Engine, *, store=None, config: ConversationConfig | None = None):
        self.engine = engine
        self.store = store
        self.config = config or ConversationConfig()
        c = self.config
        self._grounding = GroundedChat(engine, store, ranker=c.ranker, passages=c.passages, budget=c.budget,
                                       gate=c.gate)
        self._plain = GroundedChat(engine, None, budget=c.budget)
        # what earlier questions were grounded with (grounding/memory.py); on disk beside the states
        # kept there, so that a conversation reopened in a later run still matches its kept state
        self._memory = GroundingMemory(path=memory_file() if engine.disk_bytes > 0 else None)
        self._busy = threading.Lock()
        self.speculator = Speculator(engine, store)
        self._decoder = None  # the latest turn's decoder: its stats count live
        self.history_note: str | None = None  # why no reply history is kept, told with the first reply

    def use_store(self, path: str | None) -> None:
        """Ground on (and retrieve drafts from) another store, or none; a store built with another
        model is refused with SenseError and the current one kept."""
        store = open_store(self.engine, path)
        c = self.config
        self._grounding = GroundedChat(self.engine, store, ranker=c.ranker, passages=c.passages, budget=c.budget,
                                       gate=c.gate)
        self.store = store
        self.speculator.use_store(store)

    @property
    def stats(self) -> GenerationStats:
        """The current (or latest) reply's statistics, live while it is generated."""
        return self._decoder.stats if self._decoder is not None else GenerationStats(method=self.config.options.method)

    @classmethod
    def open(cls, config: ConversationConfig) -> "Conversation":
        """Load the config's model (and store): the one way every front end starts."""
        from .registry import resolve_model

        engine = Engine(resolve_model(config.model), n_ctx=config.n_ctx, n_threads=config.threads,
                        n_gpu_layers=config.gpu_layers, slot_mib=config.cache_ram_mib, rpc=config.rpc,
                        disk_mib=config.cache_disk_mib, plain_at_start=not config.one_shot)
        try:
            store = open_store(engine, config.store)
        except BaseException:
            engine.close()
            raise
        conversation = cls(engine, store=store, config=config)
        conversation.open_history()
        conversation._warm()
        return conversation

    def _warm(self) -> None:
        """Do now what a first turn would do before its prompt is read: the chat template compiled
        and its tool syntax found (chat_template.py, tool_calls.py), numpy's random module imported
        (the decoder's sampler), the index of conversations kept on disk read on its own thread
        (kv_disk.py). Measured inside serve (the 1.5B, a short question, 190 kept files): 30 ms of
        the route, 20 ms of the import and 120 ms of the index, paid by the first turn only."""
        import numpy.random  # noqa: F401

        from .tool_calls import tool_syntax

        try:
            chat_tokens(self.engine, [{"role": "user", "content": "hi"}])
        except Exception:  # a template that cannot render this: the turns that use it say why
            pass
        tool_syntax(self.engine.meta("tokenizer.chat_template") or "")
        disk = disk_states(self.engine)
        if disk is not None:
            disk.prefetch()

    def open_history(self) -> None:
        """Keep replies in the model's reply history, as the config asks (where another process
        writes it, the conversation goes on without one: `history_note` says so)."""
        if not self.config.history or self.speculator.history is not None:
            return
        from .datastore.manifest import StoreError

        try:
            self.speculator.history = ReplyHistory.open(self.engine, self.config.history_owner)
            self.history_note = self.speculator.history.table_note  # None, or why its recycle table starts anew
        except (StoreError, OSError) as exc:
            self.history_note = f"no reply history this session: {exc}"

    def close_history(self) -> None:
        """Finish the history's writes and give it up (a model switch hands it to the new conversation)."""
        history, self.speculator.history = self.speculator.history, None
        if history is not None:
            history.close()

    def close(self) -> None:
        try:
            self.close_history()
        finally:
            self.engine.close()

    @property
    def model_path(self):
        return self.engine.path

    # ------------------------------------------------------------------ turns
    def reply(self, messages: list[dict], *, options: GenerationOptions | None = None, grounded: bool | None = None,
              cancel: threading.Event | None = None, progress=None,
              tools: list[dict] | None = None) -> Iterator[ReplyEvent]:
        """A chat turn: `messages` end with the user's new message, or with the results of the tools
        the model called (role "tool"; answered from the chat as it is, without documents).
        progress(done, total) is called from this thread as a long prompt is read (prompt tokens
        evaluated or reused so far; needs `cancel`, whose chunked prefill it reports on). `tools`
        (OpenAI's tool shape) are rendered by the model's template (tool_calls.py)."""
        options = options or self.config.options
        grounded = self.config.grounded if grounded is None else grounded
        if not messages or messages[-1].get("role") not in ("user", "tool"):
            raise SenseError("the last message must be the user's (or a tool's result)")
        history = list(messages[:-1])
        if self.config.system and not (history and history[0].get("role") == "system"):
            history.insert(0, {"role": "system", "content": self.config.system})
        if messages[-1]["role"] == "tool":
            yield from self._answer_results([*history, messages[-1]], options, cancel, progress, tools)
            return
        with self._turn():
            grounding = self._grounding if grounded and self.store is not None else self._plain
            question = messages[-1]["content"]
            turn = grounding.prepare(history, question, reserve=reply_reserve(self.engine, options),
                                     memory=self._memory, tools=tools)
            if grounding is self._grounding:
                self.store = grounding.store  # refreshed: an indexer may have committed more
                self.speculator.use_store(self.store)
            notes = turn.notes
            if self.history_note:
                notes, self.history_note = [*notes, self.history_note], None  # told once
            yield Prepared(len(turn.tokens), turn.sources, notes, turn.dropped)
            for event in self._decode(turn.tokens, options, cancel, progress, keep=True):
                if isinstance(event, Finished) and turn.grounded is not None:
                    self._memory.remember(question, event.text, turn.grounded)  # for the next turn's prompt
                yield event

    def _answer_results(self, chat: list[dict], options: GenerationOptions, cancel, progress,
                        tools: list[dict] | None) -> Iterator[ReplyEvent]:
        """A turn after tool results: the chat as it is (oldest messages dropped to fit)."""
        with self._turn():
            tokens, dropped = fit_chat(self.engine, chat, reply_reserve(self.engine, options), tools=tools)
            notes = [f"left out the {dropped} oldest messages to fit the context"] if dropped else []
            yield Prepared(len(tokens), notes=notes, dropped=dropped)
            yield from self._decode(tokens, options, cancel, progress, keep=True)

    def complete(self, prompt: str | list[int], *, options: GenerationOptions | None = None,
                 cancel: threading.Event | None = None) -> Iterator[ReplyEvent]:
        """A raw continuation of `prompt` (no chat template, no documents): text, or token ids laid
        out already (a fill-in-the-middle prompt, fim.py)."""
        options = options or self.config.options
        with self._turn():
            tokens = prompt_tokens(self.engine, prompt, raw=True) if isinstance(prompt, str) else list(prompt)
            yield Prepared(len(tokens))
            yield from self._decode(tokens, options, cancel)

    @contextmanager
    def _turn(self):
        if not self._busy.acquire(blocking=False):
            raise SenseError("a reply is already being generated on this model")
        try:
            yield
        finally:
            self._busy.release()

    def _decode(self, tokens: list[int], options: GenerationOptions, cancel, progress=None, *,
                keep: bool = False) -> Iterator[ReplyEvent]:
        """The reply to `tokens`; `keep`: a chat turn, whose evaluated state is then kept on disk for
        a later run (kv_disk.py; raw completions, such as an editor's fill-in-the-middle requests on
        every keystroke, are not)."""
        decoder = self._decoder = make_decoder(self.engine, options, speculator=self.speculator)
        stop = StopText(options.stop)
        parts: list[str] = []
        reply: list[int] = []  # the tokens the model wrote (a stop string's included: the history keeps them)
        events = decoder.generate(tokens, options.max_tokens, cancel=cancel, progress=progress)
        try:
            for ev in events:
                if ev.token >= 0:
                    reply.append(ev.token)
                text = stop.push(ev.text)
                parts.append(text)
                yield ev if text == ev.text else dataclasses.replace(ev, text=text)
                if stop.stopped:
                    break
        finally:
            events.close()  # a stop string, or the caller closed us: the decoder's stats are final
        tail = stop.flush()
        if tail:
            parts.append(tail)
            yield TokenEvent(-1, tail, TARGET)
        stats = decoder.stats
        if stop.stopped:
            stats.stop_reason = "stop-string"
        reason = stats.stop_reason
        finish = ("stop" if stop.stopped or reason == "eos" else "cancelled" if reason == "cancelled" else "length")
        self.speculator.remember(len(tokens), reply)  # written on the history's own thread
        if keep:
            keep_on_disk(self.engine)  # for a later run (kv_disk.py), written on its own thread
        yield Finished("".join(parts), stats, finish)

