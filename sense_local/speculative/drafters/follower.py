"""A cursor in a source the output is copying (a prompt, a predicted file), and the replacements
learned where the output left the source and came back to it.

While the output follows the source, the cursor marks the source token it should produce next.
Where the output leaves it (an edit), the cursor is lost; one token found within NEAR tokens of
where it left, right after it left, is enough to follow again, and what the output wrote in between
is learned as a replacement of the source tokens it skipped: after " names" became " items" once,
every later " names" is drafted as " items" (a rename edits every occurrence). With a vocabulary
(Predicted Outputs) a replacement is made only where a word goes on after it as it did where it was
learned: " month" -> " mon" learned before ", day" is not made in " month" "range". Prompt lookup also
forgets a replacement that a verification rejects at its first token (`rejected_at`): an edit
made once in a prompt being rewritten is not a rename, and must not spoil the rest of the copy.

Used by prompt lookup (pld.py: the source is the context) and by Predicted Outputs (prediction.py:
the source is the predicted text). The caller finds the cursor (an n-gram lookup) and places it.

A replacement never stands for, or writes, a `fixed` token (the chat template's control tokens):
a code reply opens with "```python" where the pasted function's fence closed with "```<|im_end|>",
and learned from that, every later copy of the prompt's end drafted "python" for the end of turn,
running past the reply's end where the loop cuts a draft (in 10 of the 16 code edits of the full
suite, replayed on the 1.5B).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .renames import is_word_byte as _word_byte

NEAR = 4  # one token counts this close after where the output left, this soon after (`near`)
MAX_SPAN = 3  # source tokens a learned replacement may stand for


class Follower:
    def __init__(self, source: Sequence[int], fixed: Callable[[int], bool] | None = None, renames=None,
                 stops: frozenset[int] = frozenset()):
        self.source = source  # the tokens copied (a list that may grow, or an array)
        self.stops = stops  # source positions where a copy ends (copy_stops.py: what follows a passage)
        self.fixed = fixed  # token -> True for tokens a replacement never involves (None: none such)
        self.renames = renames  # a WordRenames (renames.py): learned words renamed in any token (None: tokens only)
        self.replaced: dict[tuple[int, ...], tuple[int, ...]] = {}  # source span -> what the output wrote instead
        self._learned_in_word: dict[tuple[int, ...], bool | None] = {}  # span -> a word went on after it there
        self.cursor: int | None = None  # the source token the output should produce next (None: lost)
        self.synced = False  # the output is following the source at the cursor
        self.pending: list[int] = []  # a learned replacement's tokens still to come before the cursor
        self.left_at: int | None = None  # the cursor when the output last left the source
        self.left_output = 0  # the output's length then (the departing token's index)
        self.followed_at: int | None = None  # the source position the latest `step` followed (None: none)
        self.run = 0  # source tokens followed in a row: a replacement's go on with it, a return after an edit restarts it at 1
        self._drafted: list[tuple[int, tuple[int, ...], int, int]] = []  # (index in the latest `ahead`, span, source position, where it parts from the source) of its replacements
        self.declined: Callable[[int], bool] | None = None  # source position -> draft it as it is, no replacement
        self._declined: list[tuple[int, int]] = []  # (index in the latest `ahead`, source position) of those declined
        self.ahead_positions: list[int] = []  # [len(latest ahead)] the source position each of its tokens copies (-1: none)
        self.stop_in_ahead: int | None = None  # index in the latest `ahead` of its first token at a stop (None: none)

    def place(self, cursor: int, run: int = 0) -> None:
        """The output follows the source from `cursor` on (found by the caller, with `run` tokens
        before it already matching)."""
        self.cursor, self.synced, self.pending, self.left_at, self.run = cursor, True, [], None, run

    def lose(self) -> None:
        self.cursor, self.synced, self.pending, self.left_at = None, False, [], None

    def step(self, token: int, output: Sequence[int]) -> bool:
        """The output's newest token (already appended to `output`): whether it goes on with the
        source (at the cursor, through a replacement, or found again near where the output left)."""
        self.followed_at = None
        if self.synced and not self.pending and self.cursor in self.stops:
            self.lose()  # the copy ended with its passage: what follows is found again, not followed
            self.run = 0
            return False
        if self.synced and self._follow(token):
            self.run += 1
            return True
        if self.synced:
            self.synced, self.pending = False, []
            self.left_at, self.left_output = self.cursor, len(output) - 1
        found = self._near(token, output)
        self.run = 1 if found else 0
        return found

    def _follow(self, t: int) -> bool:
        if self.pending:
            if self.pending[0] != t:
                return False
            self.pending.pop(0)
            return True
        c = self.cursor
        if c < len(self.source) and self.source[c] == t:
            # (a rename that starts as the source does, `(y` `1` renamed `(y` `r` `1`, is followed
            # as the source here and found again one token on; taking the rename first where drafts
            # make it was replayed and not kept: 3.298x -> 3.284x, heapq's `_siftup` misread)
            self.followed_at, self.cursor = c, c + 1
            return True
        for span, instead in self._replacements_at(c):
            if instead[0] == t:
                self.cursor += len(span)
                self.pending = list(instead[1:])
                return True
        return False

    def _declines(self, i: int) -> bool:
        return self.declined is not None and self.declined(i)

    def _replacements_at(self, i: int):
        for n in range(MAX_SPAN, 0, -1) if self.replaced else ():
            span = tuple(int(x) for x in self.source[i : i + n])
            if len(span) == n and span in self.replaced and self._word_goes_on(i + n) == self._learned_in_word.get(span):
                yield span, self.replaced[span]
        if self.renames is not None and i < len(self.source):
            renamed = self.renames.renamed(self.source, i)
            if renamed is not None:
                yield renamed

    def _near(self, token: int, output: Sequence[int]) -> bool:
        """Soon after the output left the source, the token found within NEAR tokens of where it
        left: follow again from there, and learn what the output wrote in between as a replacement."""
        if self.left_at is None:
            return False
        if len(output) - 1 - self.left_output > NEAR:
            self.left_at = None  # too late: the output went elsewhere
            return False
        end = min(self.left_at + NEAR + 1, len(self.source))
        at = next((i for i in range(self.left_at, end) if self.source[i] == token), None)
        if at is None:
            return False
        span = tuple(int(x) for x in self.source[self.left_at : at])
        instead = tuple(int(x) for x in output[self.left_output : -1])
        if (not span and 0 < len(instead) <= NEAR and self.renames is not None and self.left_at > 0
                and self.left_output > 0 and output[self.left_output - 1] == self.source[self.left_at - 1]):
            # an insertion ("(y" "1" written "(y" "r" "1"): a rename of words if it falls inside one,
            # learned with the token before it, which the output wrote too
            self.renames.learn(self.source, self.left_at - 1, at, (int(self.source[self.left_at - 1]),) + instead)
        elif 0 < len(span) <= MAX_SPAN and 0 < len(instead) <= NEAR and not self._involves_fixed(span + instead):
            # a rename of words is made by the word (renames.py), wherever the word occurs whole
            if self.renames is None or not self.renames.learn(self.source, self.left_at, at, instead):
                self.replaced[span] = instead
                self._learned_in_word[span] = self._word_goes_on(at)
        self.followed_at, self.cursor, self.synced, self.left_at = at, at + 1, True, None
        return True

    def _word_goes_on(self, i: int) -> bool | None:
        """Whether source[i] goes on with a word source[i - 1] ends in (None without a vocabulary:
        every replacement is made wherever its tokens occur)."""
        if self.renames is None or not 0 < i < len(self.source):
            return None if self.renames is None else False
        piece = self.renames.vocab.piece
        return _word_byte(piece(int(self.source[i - 1]))[-1:]) and _word_byte(piece(int(self.source[i]))[:1])

    def _involves_fixed(self, tokens: tuple[int, ...]) -> bool:
        return self.fixed is not None and any(self.fixed(t) for t in tokens)

    def ahead(self, max_len: int, start: int | None = None, overlap: bool = False) -> list[int]:
        """The source from the cursor (or from `start`, with no pending tokens) with the
        replacements learned so far made (but where `declined`): what the output should write next.
        It runs on past a stop (`stop_in_ahead` says where it crossed the first): the drafter
        doubts what follows, and a decode run padded may still carry it for nothing.

        With `overlap` (the output is appended to the source itself, as pld's context), a copy
        reaching the source's end goes on with the tokens it drafted, as an LZ77 copy overlapping its
        own output does: the draft's token j lands at source position len(source) + j, so a
        repetition is drafted whole, not one period a draft."""
        if start is None:
            out, i = list(self.pending[:max_len]), self.cursor
        else:
            out, i = [], start
        drafted, declined = [], []
        positions = [-1] * len(out)  # the source position each token copies (-1: a replacement's)
        n = len(self.source)
        crossed = None
        while len(out) < max_len and (i < n or (overlap and i - n < len(out))):
            if i >= n:  # past the source's end: what the draft itself put there
                out.append(out[i - n])
                positions.append(-1)
                i += 1
                continue
            if crossed is None and i in self.stops:
                crossed = len(out)
            made = next(iter(self._replacements_at(i)), None)
            if made is not None and self._declines(i):
                declined.append((len(out) + _shared(*made), i))  # where the kept word parts from the rename
                made = None
            if made is not None:
                span, instead = made
                drafted.append((len(out), span, i, len(out) + _shared(span, instead)))
                out.extend(instead)
                positions.extend([-1] * len(instead))
                i += len(span)
            else:
                out.append(int(self.source[i]))
                positions.append(i)
                i += 1
        self._drafted, self._declined, self.ahead_positions = drafted, declined, positions[:max_len]
        self.stop_in_ahead = crossed
        return out[:max_len]

    @property
    def replaced_in_ahead(self) -> list[tuple[int, int]]:
        """Where in the latest `ahead` a learned replacement is first told from the source's own tokens
        (where a draft holding it is first told from one holding the source's tokens): (index
        into it, source position)."""
        return [(doubt, i) for _, _, i, doubt in self._drafted]

    @property
    def declined_in_ahead(self) -> list[tuple[int, int]]:
        """Where the latest `ahead` kept the source's tokens for a replacement it declined, at the
        first of them unlike the replacement's: (index, source position)."""
        return list(self._declined)

    def rejected_at(self, index: int) -> None:
        """A verification rejected the latest `ahead`'s token at `index`: a replacement made there
        was wrong here, and is forgotten."""
        for at, span, _, _ in self._drafted:
            if at == index:
                self.replaced.pop(span, None)
        self._drafted = []


def _shared(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens a and b share: where a draft holding either first tells them apart
    (where one is the other and more, the token after the shorter: ` x` kept or ` x` `_coord`)."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k
