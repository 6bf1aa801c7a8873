"""Per-session chat settings: what the Settings dialog edits and each session stores."""
from __future__ import annotations

from dataclasses import dataclass

from sense_local.conversation import ConversationConfig
from sense_local.errors import SenseError
from sense_local.generation import GenerationOptions
from sense_local.speculative.methods import DEFAULT_METHOD

MAX_TOKENS_CEILING = 32768  # the most a reply may ask for when the model's context is not known


@dataclass
class Settings:
    method: str = DEFAULT_METHOD
    theta: float | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    system: str = ""
    grounded: bool = True  # with a store loaded: retrieve passages into each question, cite them

    @classmethod
    def from_config(cls, config: ConversationConfig) -> "Settings":
        o = config.options
        return cls(method=o.method, theta=o.theta, max_tokens=o.max_tokens, temperature=o.temperature,
                   system=config.system, grounded=config.grounded)

    @classmethod
    def from_dict(cls, stored: dict) -> "Settings":
        """Settings a session saved (keys this version does not know are ignored)."""
        known = cls().to_dict()
        return cls(**{k: v for k, v in stored.items() if k in known})

    def options(self) -> GenerationOptions:
        """The decoding options these settings ask for (raises SenseError when one is out of range)."""
        return GenerationOptions(method=self.method, max_tokens=self.max_tokens, temperature=self.temperature,
                                 theta=self.theta)

    def check(self, context: int | None = None) -> None:
        """Refuse values out of range (SenseError, one line naming the field): the decoding options'
        own checks, and a reply no longer than the model's context (or MAX_TOKENS_CEILING)."""
        self.options()
        limit, why = (context, "the model's context") if context else (MAX_TOKENS_CEILING, "the limit")
        if self.max_tokens > limit:
            raise SenseError(f"Max tokens: at most {limit:,} ({why}); got {self.max_tokens:,}")

    def to_dict(self) -> dict:
        return dict(self.__dict__)
