"""The Textual chat app (`sense-local chat` on a terminal): it renders sense_local.conversation's turns.

app.py holds the app (the model, its loading and switching; the key bindings; routing of the dialogs),
chat.py the chat screen (sessions on show, the reply worker and its streaming), messages.py every
message posted between widgets, screens and workers (dataclasses), status.py the status bar and the
reply's figures (GenerationStats', live or final), documents.py the documents screen (F3), screens.py
the dialogs (sessions, settings, models; each hands its result back through `dismiss`), dialogs.py the
confirmation and help, widgets.py the transcript, prompt box and legend, footer.py the footer,
markdown.py the reply's rendering, settings.py the per-session settings. Nothing here imports the CLI.
"""
