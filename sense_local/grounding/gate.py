"""The relevance gate: whether the documents are about a question at all.

Two tests, both must pass:
  * words: at least COVERAGE_FLOOR of the question's content words, weighted by idf, occur in the
    documents (PassageTable.coverage). Words like "sourdough" that the documents never use say the
    question is about something else.
  * meaning: the hidden-state votes of the best passage (retrieve.PassageRetriever.by_keys, per question
    token) reach VOTE_RATIO times the median votes of BACKGROUND, generic messages no document is
    about, run against the same store. Words alone let "Name three colours." through over man pages
    (grep has --colour, every page has "name"); the target's states at those words, in that
    sentence, are not near the states of the same words in an option list.

Votes are sums of exp((similarity - 1) / VOTE_TEMPERATURE) over the nearest key states, so their scale
is the model's and the key layer's: the floor is relative to the same store's background, not a
constant. Where the key states put generic messages close to the documents anyway (the background's
median votes above SEPARATING, what one neighbour at cosine 0.8 gives: the 135M's block keys, at
0.16, about cosine 0.91, against 5e-6 to 1e-5 on the 1.5B, about 0.43), they cannot tell topics
apart, the meaning test is left out and words decide alone. Measured with `python -m benchmarks.retrieval_bench --gate`
(README, "Grounding gate").
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

VOTE_TEMPERATURE = 0.05  # votes are exp((similarity - 1) / VOTE_TEMPERATURE) (retrieve.PassageRetriever.by_keys)

COVERAGE_FLOOR = 0.55  # share of the question's idf-weighted content words the documents hold
VOTE_RATIO = 3.0  # the best passage's votes per question token, over the background's median
SEPARATING = math.exp((0.8 - 1.0) / VOTE_TEMPERATURE)  # background median votes above this: no meaning test
REFRESH = 2.0  # measured again once the vectors grow or shrink 2x (1.5B: the median moved 2x over 3.5x more vectors)
BACKGROUND_FILE = "gate-background.json"  # beside the store's files; a cache (any process may rewrite it)

# Generic messages, none of them in the benchmark's question sets (benchmarks/doc_questions.py).
BACKGROUND = (
    "Hi there!", "What can you do?", "Tell me a story.", "What is love?", "Good morning, how is it going?",
    "What is the meaning of life?", "Write a limerick about a frog.", "Recommend a song.",
    "What is the biggest city in Canada?", "How do birds fly?", "Give me a recipe for pancakes.",
    "What is the color of grass?", "Who was Albert Einstein?", "Name a fruit that is yellow.",
    "How long is a marathon?", "What are you thinking about?", "Say something nice.",
    "How do I stay motivated?", "What is the best holiday destination?", "Describe the ocean.",
    "What did you have for breakfast?", "Which sport is the most popular?", "How old is the universe?",
    "What rhymes with moon?",
)
_BACKGROUND_ID = hashlib.sha256("\n".join(BACKGROUND).encode()).hexdigest()[:16]


@dataclass
class Background:
    """One store's hidden-state votes (per question token) for the BACKGROUND messages."""

    key_layer: int | None
    n_vectors: int
    votes: list[float]  # [len(BACKGROUND)]
    messages: str = _BACKGROUND_ID

    @property
    def median(self) -> float:
        return statistics.median(self.votes) if self.votes else math.inf

    @property
    def floor(self) -> float | None:
        """The votes a question must reach, or None where the key states do not separate topics."""
        if self.median > SEPARATING:
            return None
        return VOTE_RATIO * self.median

    def fits(self, key_layer: int | None, n_vectors: int) -> bool:
        return (self.messages == _BACKGROUND_ID and self.key_layer == key_layer
                and n_vectors <= self.n_vectors * REFRESH and self.n_vectors <= n_vectors * REFRESH)


def background_for(store, key_layer: int | None, votes_of: Callable[[str], float]) -> Background:
    """The store's background, measured now (24 side passes: ~6 s on the 1.5B, 0.7 s on the 135M)
    unless the store object or the file beside the store has one that fits."""
    have = store.gate_background
    if have is None:
        have = _read(store)
    if have is None or not have.fits(key_layer, store.n_vectors):
        have = Background(key_layer, store.n_vectors, [votes_of(m) for m in BACKGROUND])
        _write(store, have)
    store.gate_background = have
    return have


def _read(store) -> Background | None:
    try:
        data = json.loads((store.dir / BACKGROUND_FILE).read_text())
        return Background(**data)
    except (OSError, ValueError, TypeError):
        return None


def _write(store, background: Background) -> None:
    """Atomically, where the directory is writable; a read-only place keeps it in memory only."""
    path = store.dir / BACKGROUND_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(asdict(background)))
        tmp.replace(path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
