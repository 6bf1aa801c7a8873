"""Words of a predicted file that the request names: where its edit is likely to be.

A request to edit a file says what to change ("Rename the parameter pat to pattern", "rename the
variable cls to klass"): the identifiers it names that the file has in its code are where the reply
is likely to leave the prediction, and until the reply has written one of them once nobody knows
whether it keeps it. So the first code occurrence of each named word is a doubtful token in a
Predicted Outputs draft (prediction.py): a draft is sized to stop before it unless the cost curve
says a longer one still pays. After the reply has passed the word once, kept or edited, the word is
known (a kept word is kept, an edited one is a learned rename), and drafts run through it.

A word is named when the prompt says it more often than the prediction does: a client sends the
file in the prompt and again as the prediction, so what the prompt says besides is the request (and
a prediction that is not the prompt's file, e.g. the reply a ceiling measurement replays, names
little). Python's keywords are never named (a request "in one code block" does not make `for x in
y` doubtful). A prompt that holds the file twice names every word once; the estimate of how often
a named word is edited (prediction.py, learned also where a draft stopped before one and the
target's own next token chose) then soon falls, and with it the doubt.
"""
from __future__ import annotations

import keyword
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .renames import WORD

# Words a request says in English that are also keywords of the code ("in one code block" and
# `for x in y`): never named. Python's, the language most edited here (others' collide less); not
# its soft keywords (`type`, `match`, `case`), which are names too.
KEYWORDS = {w.encode() for w in keyword.kwlist}


def word_starts(pieces: Sequence[bytes]) -> list[bytes | None]:
    """[len(pieces)] the identifier that starts in each token (its first, where several do; None: none)."""
    words: list[bytes | None] = [None] * len(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces])  # [P + 1] byte offset of each token
    found = list(WORD.finditer(b"".join(pieces)))
    tokens = np.searchsorted(starts, [m.start() for m in found], side="right") - 1  # the token each starts in
    for i, m in zip(tokens.tolist(), found):
        if words[i] is None:
            words[i] = m.group()
    return words


class Mentions:
    def __init__(self, pieces: Sequence[bytes], words: list[bytes | None], prose: np.ndarray):
        """`pieces`: the prediction's tokens' bytes, `words`: the identifier starting in each
        (word_starts), `prose`: [P] bool, its tokens in comments and strings."""
        self.text = b"".join(pieces)
        self.word_at = [None if p else w for w, p in zip(words, prose)]  # [P] the identifier starting in each code token
        self._in_prediction = Counter(WORD.findall(self.text))  # how often the prediction says each word
        self._code = {w for w in self.word_at if w is not None}  # the words its code has
        self.named: set[bytes] = set()  # words of the request that the prediction's code has
        self.met: set[bytes] = set()  # of those, the ones the reply has passed

    def begin(self, prompt_pieces: Sequence[bytes]) -> None:
        """Read the request from the prompt's tokens' bytes."""
        in_prompt = Counter(WORD.findall(b"".join(prompt_pieces)))
        self.named = {w for w in self._code if in_prompt[w] > self._in_prediction[w]} - KEYWORDS
        self.met = set()

    def doubtful(self, position: int) -> bytes | None:
        """The named word starting at the prediction's token `position` that the reply has not yet
        passed (None: the token is no such start)."""
        word = self.word_at[position]
        return word if word is not None and word in self.named and word not in self.met else None

    def passed(self, position: int) -> None:
        """The reply went past the prediction's token `position` (followed it, or wrote something
        else there)."""
        word = self.word_at[position]
        if word is not None:
            self.met.add(word)
