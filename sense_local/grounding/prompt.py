"""Put retrieved passages into the conversation within a token budget.

Only the newest user turn carries passages (older turns keep their plain text, so the context holds
more conversation). Passages are added best first while they fit `budget` tokens; a passage that
does not fit whole is cut at a line break. Older turns are then dropped by `fit_chat` as the
context fills, never the passages of the current question.
"""
from __future__ import annotations

from pathlib import Path

from .retrieve import PassageHit
from .sources import Source

DEFAULT_BUDGET = 1024  # tokens of passages per question
INSTRUCTION = (
    "Answer the question using the numbered passages from my documents below. "
    "Cite the passages you use like [1]. If they do not contain the answer, say so."
)


def grounded_message(engine, question: str, hits: list[PassageHit], budget: int = DEFAULT_BUDGET) -> tuple[str, list[Source]]:
    """The user message for a question with its passages, and the sources it cites."""
    blocks, sources, used = [], [], 0
    for hit in hits:
        source = Source.from_row(len(sources) + 1, hit.passage, hit.score)
        text = source.passage
        cost = len(engine.tokenize(text, add_special=False)) + 16
        if used + cost > budget:
            room = budget - used - 16
            if room < 32:
                break
            text = _cut(engine, text, room)
            cost = room + 16
        header = f"[{source.number}] {Path(source.path).name}, {source.location}"
        blocks.append(f"{header}\n{text}")
        sources.append(source)
        used += cost
    if not blocks:
        return question, []
    return f"{INSTRUCTION}\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}", sources


def _cut(engine, text: str, max_tokens: int) -> str:
    tokens = engine.tokenize(text, add_special=False)[:max_tokens]
    cut = engine.detokenize(tokens)
    return cut[: cut.rfind("\n")] if "\n" in cut[len(cut) // 2 :] else cut
