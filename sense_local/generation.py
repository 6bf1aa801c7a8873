"""One-call generation on top of the engine and the speculative loop: options, prompt, decoder."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .chat_template import chat_tokens
from .engine import Engine
from .errors import ContextOverflowError, SenseError
from .speculative.cost import FLAT
from .speculative.grammar import Grammar
from .speculative.logprobs import MAX_TOP
from .speculative.loop import SpecDecoder
from .speculative.methods import DEFAULT_METHOD, get_method
from .speculative.penalties import Penalties
from .speculative.speculator import Speculator
from .speculative.verify import AcceptanceRule, SoftOptions, Truncation


MAX_STOPS = 4  # stop strings per request (OpenAI's limit)
DEFAULT_CHAT_MAX_TOKENS = 512  # reply length in chat and serve when none is asked (generate's: GenerationOptions)


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """How one reply is decoded. Keyword-only: every front end names what it sets."""

    method: str = DEFAULT_METHOD
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0
    theta: float | None = None  # soft-gate threshold for soft methods (None: SoftOptions' default)
    free_verification: bool = False  # size drafts as if a k-token decode cost one token's (a flat cost curve)
    stop: tuple[str, ...] = ()  # the reply ends before the first of these strings (not included)
    top_k: int = 0  # sampling (temperature > 0) draws from the top_k likeliest tokens (0: all)
    top_p: float = 1.0  # ... from the smallest set holding this much probability (1: all)
    min_p: float = 0.0  # ... from tokens at least min_p times as likely as the likeliest (0: all)
    prediction: str = ""  # Predicted Outputs: text the reply will mostly repeat, drafted from (drafters/prediction.py)
    grammar: str = ""  # GBNF the reply must match (response_format, schema_grammar.py); "" for none
    presence_penalty: float = 0.0  # logits of tokens already in the reply lowered by this (penalties.py)
    frequency_penalty: float = 0.0  # ... and by this per time they occur
    logprobs: int | None = None  # None: none; n: each token's log-probability and its row's n likeliest (logprobs.py)

    def __post_init__(self):
        get_method(self.method)  # unknown names fail here, with the list of known ones
        if self.max_tokens < 1:
            raise SenseError(f"--max-tokens must be at least 1 (got {self.max_tokens})")
        if not 0.0 <= self.temperature <= 5.0:
            raise SenseError(f"--temperature must be between 0 and 5 (got {self.temperature})")
        if self.theta is not None:
            SoftOptions(theta=self.theta)  # validates
        self.truncation  # validates top_k, top_p, min_p
        self.penalties  # validates presence_penalty, frequency_penalty
        if self.logprobs is not None and not (isinstance(self.logprobs, int) and 0 <= self.logprobs <= MAX_TOP):
            raise SenseError(f"top_logprobs must be an integer from 0 to {MAX_TOP} (got {self.logprobs!r})")
        if len(self.stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in self.stop):
            raise SenseError(f"stop: at most {MAX_STOPS} non-empty strings (got {list(self.stop)!r})")

    @property
    def truncation(self) -> Truncation:
        return Truncation(self.top_k, self.top_p, self.min_p)

    @property
    def penalties(self) -> Penalties:
        return Penalties(self.presence_penalty, self.frequency_penalty)

    def replace(self, **changes) -> "GenerationOptions":
        """A copy with some fields changed (validated like a new one)."""
        return dataclasses.replace(self, **changes)


def open_store(engine: Engine, path):
    """A document store opened read-only (memory-mapped) for the loaded model, which from now on reads
    key states at the store's key layer; None for no path."""
    if not path:
        return None
    from .datastore import DocumentStore

    store = DocumentStore.open(path, fingerprint=engine.fingerprint)
    engine.use_key_layer(store.manifest.key_layer)  # queries are read where the store's keys were
    return store


def prompt_tokens(engine: Engine, text: str, *, raw: bool = False, system: str | None = None) -> list[int]:
    """Tokens for a user prompt: the model's chat template applied unless `raw`. A raw prompt's
    special-token texts are the model's special tokens (`<|fim_prefix|>` in a FIM prompt a client
    built itself, `<|im_start|>`), as llama-server reads them."""
    if raw:
        tokens = engine.tokenize(text, add_special=True, parse_special=True)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        tokens = chat_tokens(engine, messages)
    if not tokens:
        raise SenseError("empty prompt")
    if len(tokens) >= engine.n_ctx:
        raise ContextOverflowError(
            f"prompt has {len(tokens)} tokens but the context holds {engine.n_ctx}; shorten it or raise --ctx"
        )
    return tokens


def make_decoder(
    engine: Engine, options: GenerationOptions, *, store=None, record_gaps: bool = False,
    speculator: Speculator | None = None,
) -> SpecDecoder:
    """A decoder for one reply by the options' method. `speculator`: the conversation's (what
    outlives a reply: speculator.py); without one, a one-off speculator over `store` (an open
    DocumentStore for methods that retrieve) that keeps nothing on disk."""
    if speculator is None:
        speculator = Speculator(engine, store, remember_cost=False)
    method = get_method(options.method)
    if method.needs_store and speculator.store is None:
        raise SenseError(f"method '{method.name}' retrieves from documents: give a store (--store DIR)")
    drafter = speculator.drafter_for(method, options.prediction)
    soft = speculator.soft_verifier(options.theta) if method.rule == "soft" else None
    return SpecDecoder(
        engine,
        method=method.name,
        drafter=drafter,
        rule=AcceptanceRule(options.temperature, soft, options.truncation),
        cost=None if drafter is None else FLAT if options.free_verification else speculator.cost.curve,
        curve_memory=speculator.cost,
        seed=options.seed,
        record_gaps=record_gaps,
        grammar=Grammar(engine, options.grammar) if options.grammar else None,
        penalties=options.penalties,
        logprobs=options.logprobs,
    )
