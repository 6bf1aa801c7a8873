"""The Textual app (stub until the TUI issue): `sense-local chat` falls back to the plain chat."""
