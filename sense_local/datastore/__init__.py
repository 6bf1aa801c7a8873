"""The document datastore: hidden-state-keyed USearch store of the user's documents."""
from .indexer import IndexReport, index_paths
from .manifest import StoreError
from .store import DocumentStore, Neighbours

__all__ = ["DocumentStore", "IndexReport", "Neighbours", "StoreError", "index_paths"]
