"""The bench's document stores: pydoc topics indexed once per model and kept in the cache, and the
docqa-rag tasks' prompts with passages retrieved from them."""
from __future__ import annotations

import sys

from ..engine import Engine
from .tasks import Task


def with_retrieval(engine: Engine, store, task: Task, max_tokens: int) -> Task:
    """A docqa-rag task's prompt: the question with passages retrieved from the store (grounded chat)."""
    from dataclasses import replace

    from ..grounding.chat import GroundedChat

    turn = GroundedChat(engine, store).prepare([], task.prompt, reserve=max_tokens)
    return replace(task, prompt=turn.content)


def bench_store(engine: Engine, suite: str):
    """The benchmark's document store (pydoc topics), built once per model and suite, then cached."""
    from .tasks import corpus_topics

    return pydoc_store(engine, suite, corpus_topics(suite))


def pydoc_store(engine: Engine, key: str, names: list[str]):
    """A store of the given pydoc topics (one .txt each), cached per model and key. Every call runs
    the incremental indexer (about a second when nothing changed) so older caches gain what newer
    code stores (passages), then opens the store read-only."""
    from pydoc_data.topics import topics

    from ..datastore import DocumentStore, index_paths
    from ..paths import cache_dir

    layer = "" if engine.key_layer is None else f"-block{engine.key_layer}"  # keys of another layer: another store
    root = cache_dir() / "bench-stores" / f"{engine.fingerprint}-{key}{layer}"
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = corpus / f"{name}.txt"
        if not path.exists() or path.read_text() != topics[name]:
            path.write_text(topics[name])
    if not (root / "store" / "manifest.json").exists():
        print(f"building a benchmark document store ({len(names)} pydoc topics, once)...", file=sys.stderr)
    index_paths(engine, root / "store", [corpus])
    return DocumentStore.open(root / "store", fingerprint=engine.fingerprint)
