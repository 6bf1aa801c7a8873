"""Put retrieved passages into the conversation within a token budget.

The newest user turn carries its passages. Earlier turns keep theirs where the conversation's
grounding memory still has them (memory.py), so the prompt repeats the tokens already evaluated; a
passage already in the context is then cited by its number, not repeated, and new passages are
numbered after the ones above. Passages are added best first while they fit `budget` tokens; a
passage that does not fit whole is cut at a line break.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .retrieve import PassageHit
from .sources import Source

DEFAULT_BUDGET = 1024  # tokens of passages per question
INSTRUCTION = (
    "Answer the question using the numbered passages from my documents below. "
    "Cite the passages you use like [1]. If they do not contain the answer, say so."
)
INSTRUCTION_ABOVE = (
    "Answer the question using the numbered passages from my documents given above ({numbers}). "
    "Cite the passages you use like [1]. If they do not contain the answer, say so."
)
ALSO_ABOVE = "Passages given above that also apply: {numbers}."
QUESTION = "Question: "  # what the question follows the passages under
# What follows a passage in the message: the next passage's header, the list of passages above, or
# the question. A copy of a passage ends there (speculative/copy_stops.py): group 1 starts the next part.
AFTER_PASSAGE = re.compile(rb"\n\n(\[\d+\] |" + re.escape(ALSO_ABOVE.split("{")[0].encode()) + rb"|"
                           + re.escape(QUESTION.encode()) + rb")")


def grounded_message(engine, question: str, hits: list[PassageHit], budget: int = DEFAULT_BUDGET,
                     in_context: Sequence[Source] = ()) -> tuple[str, list[Source], tuple[int, ...]]:
    """The user message for a question with its passages, the sources it cites (in the hits'
    order) and the numbers of those it cites from `in_context` (passages given earlier in the
    conversation) without repeating them."""
    known = {(s.path, s.passage): s for s in in_context}
    number = max((s.number for s in in_context), default=0)
    blocks, sources, refers, used = [], [], [], 0
    for hit in hits:
        earlier = known.get((hit.passage.path, hit.passage.text))
        if earlier is not None:
            sources.append(earlier)
            refers.append(earlier.number)
            continue
        source = Source.from_row(number + 1, hit.passage, hit.score)
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
        number += 1
        used += cost
    above = ", ".join(f"[{n}]" for n in refers)
    if blocks:
        parts = [INSTRUCTION, *blocks] + ([ALSO_ABOVE.format(numbers=above)] if refers else [])
    elif refers:
        parts = [INSTRUCTION_ABOVE.format(numbers=above)]
    else:
        return question, [], ()
    return "\n\n".join(parts) + f"\n\n{QUESTION}{question}", sources, tuple(refers)


def _cut(engine, text: str, max_tokens: int) -> str:
    tokens = engine.tokenize(text, add_special=False)[:max_tokens]
    cut = engine.detokenize(tokens)
    return cut[: cut.rfind("\n")] if "\n" in cut[len(cut) // 2 :] else cut
