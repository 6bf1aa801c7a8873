"""The Textual chat app (`sense-local chat` on a terminal): it renders sense_local.conversation's turns.

app.py holds the chat screen and its key bindings, screens.py the dialogs (documents, sessions,
settings, models; each hands its result back through `dismiss` or a bubbling message), widgets.py
the transcript and status bar, settings.py the per-session settings. Nothing here imports the CLI.
"""
