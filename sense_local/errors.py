"""User-facing errors: one line, naming the path or value and the problem."""


class SenseError(Exception):
    """An error caused by the user's input or environment (exit code 2 in the CLI)."""


class ModelError(SenseError):
    """A model file that is missing, unreadable or not a usable GGUF."""


class ContextOverflowError(SenseError):
    """The prompt (plus the tokens asked for) does not fit the context window."""


class Cancelled(Exception):
    """Work stopped because its cancel flag was set (not an error: the caller asked for it)."""
