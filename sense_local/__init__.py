"""sense-local: local GGUF chat with SENSE retrieval-based speculative decoding."""
from . import native  # noqa: F401  (llama.cpp first: see native.py on import order)
from .conversation import Conversation, ConversationConfig, Finished, Prepared
from .engine import Engine, EvalOutput
from .errors import ContextOverflowError, ModelError, SenseError
from .generation import GenerationOptions, make_decoder, prompt_tokens
from .model_info import ModelInfo, read_model_info
from .registry import resolve_model

__all__ = [
    "ContextOverflowError",
    "Conversation",
    "ConversationConfig",
    "Finished",
    "Prepared",
    "Engine",
    "EvalOutput",
    "GenerationOptions",
    "ModelError",
    "ModelInfo",
    "SenseError",
    "make_decoder",
    "prompt_tokens",
    "read_model_info",
    "resolve_model",
]
__version__ = "0.1.0"
