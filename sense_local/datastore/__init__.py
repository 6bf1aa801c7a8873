"""The document datastore: hidden-state-keyed USearch store of the user's documents."""
from .indexer import IndexReport, PassState, document_state, index_paths
from .manifest import StoreError
from .store import DocumentStore, Neighbours

__all__ = ["DocumentStore", "IndexReport", "Neighbours", "PassState", "StoreError", "document_state", "index_paths"]
