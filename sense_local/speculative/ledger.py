"""Whether a reply's drafts are paying: the loop's guard against drafting that costs more than it returns.

A verified draft of k tokens costs c(k + 1) - 1 one-token decodes more than a plain step (the online
cost curve) and returns the tokens accepted. Drafters start every reply from priors, and on free
writing those are optimistic: on the 135M's open tasks SENSE verified 5-7 drafts of 5-7 tokens per
128-token reply (estimates 0.71-0.86) and 6 of their 37 tokens stood, ~10.7 decodes spent for 6
tokens (0.94x `ar`). Once the reply's drafts are behind by more than SLACK decodes, drafting pauses
for the next PAUSE drafts the cost policy would have verified, doubling up to MAX_PAUSE while it
stays behind; a proposal the drafter rates at
SURE or above (a copy under way: long prompt-lookup matches, runs of accepted drafts) goes anyway,
and paused proposals are still scored against the next token (the loop's shadow), so estimates keep
learning while nothing is spent.
"""
from __future__ import annotations

from dataclasses import dataclass

SLACK = 2.0  # one-token decodes the reply's drafts may be behind before drafting pauses
PAUSE = 8  # drafts skipped in the first pause
MAX_PAUSE = 64
SURE = 0.9  # a proposal rated this likely goes even in a pause


@dataclass
class DraftLedger:
    spent: float = 0.0  # one-token decodes the reply's verified drafts cost beyond plain steps
    returned: int = 0  # draft tokens accepted
    pause: int = PAUSE  # length of the next pause
    skip: int = 0  # drafts left to skip in the current pause

    @property
    def behind(self) -> float:
        return self.spent - self.returned

    def allows(self, acceptance: float) -> bool:
        """Whether a draft the cost policy chose may be verified (one in a pause is counted off)."""
        if self.skip > 0:
            self.skip -= 1
            return acceptance >= SURE
        return True

    def record(self, extra_cost: float, accepted: int) -> None:
        """A verified draft: its extra cost in one-token decodes and the tokens it gave."""
        self.spent += max(extra_cost, 0.0)
        self.returned += accepted
        if self.behind < 0:
            self.pause = PAUSE  # drafting has paid: the next pause starts short again
        if self.behind > SLACK:
            self.skip = self.pause
            self.pause = min(MAX_PAUSE, self.pause * 2)
            self.spent = self.returned + SLACK / 2  # what a pause forgives: judge what comes after it
