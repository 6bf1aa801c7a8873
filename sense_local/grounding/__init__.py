"""Grounded chat: passages retrieved from the document store, placed in the prompt, cited."""
