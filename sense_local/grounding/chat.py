"""One grounded turn: retrieve passages for the question, build the prompt, say what the answer
can rest on. `sense-local ask`, the line chat and the TUI all go through `GroundedChat.prepare`."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..chat_template import chat_tokens, fewest, fit_chat
from ..errors import SenseError
from .memory import GroundedQuestion, GroundingMemory, Recalled
from .prompt import DEFAULT_BUDGET, grounded_message
from .retrieve import DEFAULT_RANKER, PassageRetriever
from .sources import Source

DEFAULT_PASSAGES = 3


@dataclass
class GroundedTurn:
    tokens: list[int]  # the whole prompt, chat template applied
    content: str  # the user message as sent (question + passages)
    sources: list[Source] = field(default_factory=list)
    dropped: int = 0  # older messages left out to make room
    notes: list[str] = field(default_factory=list)  # for the user: partial index, empty store, ...
    grounded: GroundedQuestion | None = None  # what the grounding memory keeps of it (None: no passages)


class GroundedChat:
    def __init__(self, engine, store, *, ranker: str = DEFAULT_RANKER, passages: int = DEFAULT_PASSAGES,
                 budget: int = DEFAULT_BUDGET, gate: bool = True):
        if passages < 1:
            raise SenseError(f"--passages must be at least 1 (got {passages})")
        if budget < 64:
            raise SenseError(f"--budget must be at least 64 tokens (got {budget})")
        self.engine = engine
        self.store = store
        self.retriever = PassageRetriever(engine, store, ranker) if store is not None else None
        self.passages = passages
        self.budget = budget
        self.gate = gate  # leave the documents out of questions they are not about (retrieve.Evidence)

    def prepare(self, messages: list[dict], question: str, *, reserve: int,
                memory: GroundingMemory | None = None, tools: list[dict] | None = None) -> GroundedTurn:
        """Prompt tokens for `messages` (earlier turns) + the grounded question. With a `memory`,
        earlier questions come back with the passages they were answered from while they fit (the
        oldest lose theirs first), so the prompt starts with the tokens evaluated last turn."""
        question = question.strip()
        if not question:
            raise SenseError("empty question: type something to ask")
        notes, hits = self._retrieve(question)
        # passages get what is left of the context after the reply, the question and the template
        room = self.engine.n_ctx - reserve - len(self.engine.tokenize(question, add_special=False)) - 192
        budget = min(self.budget, max(room, 0))
        chat, content, sources, refers, tokens = self._fit(messages, question, hits, budget, reserve, memory, tools)
        dropped = 0
        if len(tokens) + reserve > self.engine.n_ctx:  # every earlier question is plain: drop the oldest turns
            tokens, dropped = fit_chat(self.engine, chat, reserve, tools=tools)
            notes.append(f"left out the {dropped} oldest messages to fit the context")
        grounded = None
        if sources:
            grounded = GroundedQuestion(content, tuple(s for s in sources if s.number not in refers), refers)
        return GroundedTurn(tokens, content, sources, dropped, notes, grounded)

    def _fit(self, messages, question, hits, budget, reserve, memory, tools=None):
        """(chat, the question's message, its sources, the numbers it cites from above, tokens) with
        the fewest of the oldest remembered questions made plain that lets it fit (bisection: the
        prompt only shrinks as more are made plain); all plain if even that does not fit."""

        def attempt(skip: int):
            recalled = memory.recall(messages, skip) if memory is not None else Recalled(list(messages), [])
            content, sources, refers = grounded_message(self.engine, question, hits, budget, recalled.in_context)
            chat = [*recalled.messages, {"role": "user", "content": content}]
            return chat, content, sources, refers, chat_tokens(self.engine, chat, tools=tools)

        def fits(tried) -> bool:
            return len(tried[-1]) + reserve <= self.engine.n_ctx

        best = attempt(0)
        remembered = memory.count(messages) if memory is not None else 0
        if fits(best) or not remembered:
            return best
        plain = attempt(remembered)
        return fewest(1, remembered, plain, attempt, fits)[0] if fits(plain) else plain

    def _retrieve(self, question: str) -> tuple[list[str], list]:
        """(notes for the user, the passages found for `question`)."""
        notes, hits = [], []
        if self.store is None:
            return notes, hits
        fresh = self.store.refreshed()  # an indexer may have committed more since
        if fresh is not self.store:
            self.store, self.retriever = fresh, PassageRetriever(self.engine, fresh, self.retriever.ranker)
        status = self.store.indexing_status()
        if status:
            notes.append(f"indexing is still running: answering from the {len(self.store.manifest.documents)} "
                         "documents indexed so far")
        unkeyed = len(self.store.unkeyed())
        if unkeyed:
            notes.append(f"{unkeyed} document{'s' * (unkeyed > 1)} not yet read by the model: found by words only")
        if not self.store.manifest.documents:
            notes.append("the document store is empty: answering without documents")
        else:
            hits = self.retriever.search(question, self.passages, gate=self.gate)
            if not hits:
                notes.append("the documents are not about this question (few of its words occur in them): "
                             "answering without them")
        return notes, hits
