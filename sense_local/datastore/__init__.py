"""The document datastore: the user's documents in a USearch store keyed by the model's key states."""
from .index_report import IndexReport, PassState, document_state
from .indexer import index_paths
from .manifest import StoreError
from .store import DocumentStore, Neighbours

__all__ = ["DocumentStore", "IndexReport", "Neighbours", "PassState", "StoreError", "document_state", "index_paths"]
