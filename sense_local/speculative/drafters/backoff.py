"""A source's searches paused while they bear no fruit (SENSE's stores: sense.py)."""
from __future__ import annotations

IDLE_STEPS = 3  # searches of a source that bore no fruit in a row before it pauses


class Backoff:
    """Pauses one source's searches while they bear no fruit. In free writing neighbours rarely
    propose anything accepted, and a search costs ~1.5% (live context) to ~5% (document store) of a
    one-token decode here: after IDLE_STEPS fruitless searches the source sits out 2, 4, ... up to
    `max_pause` steps; a search whose draft gets a token accepted ends the backoff."""

    def __init__(self, max_pause: int):
        self.max_pause = max_pause
        self.reset()

    def reset(self) -> None:
        self.idle = 0  # fruitless searches in a row
        self.pause = 2  # length of the next pause
        self.skip = 0  # steps left in the current pause

    def due(self) -> bool:
        """Whether to search this step (a step in a pause is counted off)."""
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def result(self, fruit: bool) -> None:
        if fruit:
            self.idle, self.pause = 0, 2
            return
        self.idle += 1
        if self.idle >= IDLE_STEPS:
            self.idle, self.skip = 0, self.pause
            self.pause = min(self.max_pause, self.pause * 2)
