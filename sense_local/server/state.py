"""What the server holds while it runs: the one conversation runtime, its queue, the names it answers
to, and the settings every route reads."""
from __future__ import annotations

from ..conversation import Conversation
from ..embeddings import LazyEmbedder
from .jobs import GenerationQueue


class ServerState:
    def __init__(self, conversation: Conversation, *, model_id: str, aliases: set[str], api_key: str | None,
                 queue_size: int, strict_model: bool = False, fixed_seed: bool = False,
                 embedder: LazyEmbedder | None = None):
        self.conversation = conversation
        self.model_id = model_id
        self.aliases = aliases | {model_id}
        self.strict_model = strict_model  # a request naming another model gets 404 (else: the loaded one answers)
        self.fixed_seed = fixed_seed  # requests without a seed use the configured one (else: a random one each)
        self.api_key = api_key
        self.queue = GenerationQueue(conversation, queue_size)
        self.embedder = embedder or LazyEmbedder()  # loaded on the first /v1/embeddings request, then kept
