"""The chat's footer: the app's keys in the order the app lists them, and on a narrow terminal the
most important ones first, with short labels, as many as fit whole (F1 help lists them all)."""
from __future__ import annotations

from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# narrow: actions in order of importance, and their short labels
NARROW_ORDER = ("help", "documents", "sessions", "settings", "pick_model", "cancel", "quit", "toggle_highlight",
                "copy_reply", "new_session", "model_info")
NARROW_LABELS = {"help": "Help", "documents": "Docs", "sessions": "Chats", "settings": "Settings",
                 "pick_model": "Models", "cancel": "Stop", "quit": "Quit", "toggle_highlight": "Colours",
                 "copy_reply": "Copy", "new_session": "New", "model_info": "Info"}


class ChatFooter(Footer):
    """Textual's footer orders keys by how the focused widget's bindings merge with the app's (it
    began at F6) and cuts the last one under the palette key; this one starts with the app's own keys
    and shows whole keys only. `compact` is the narrow layout (no palette key: Ctrl+P still works)."""

    def compose(self):
        if not self._bindings_ready:
            return
        shown: dict[str, tuple] = {}  # action -> (binding, enabled, tooltip): one key per action
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show:
                shown.setdefault(binding.action, (binding, enabled, tooltip))
        app_order = [b.action for b in self.app.BINDINGS if getattr(b, "show", False)]
        order = NARROW_ORDER if self.compact else app_order
        actions = sorted(shown, key=lambda a: order.index(a) if a in order else len(order))
        palette = list(self._palette_key()) if not self.compact else []
        room = self.app.size.width - sum(len(k.key_display) + len(k.description) + 5 for k in palette)
        for action in actions:  # whole keys only, as many as fit
            binding, enabled, tooltip = shown[action]
            label = NARROW_LABELS.get(action, binding.description) if self.compact else binding.description
            key = self.app.get_key_display(binding)
            room -= len(key) + len(label) + (2 if self.compact else 3)  # text, padding and margin
            if room < 0:
                break
            yield FooterKey(binding.key, key, label, action, disabled=not enabled,
                            tooltip=tooltip or binding.description).data_bind(compact=Footer.compact)
        yield from palette

    def _palette_key(self):
        """The command palette's key, docked right (as Textual's footer shows it)."""
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return
        found = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if found is not None:
            _, binding, enabled, tooltip = found
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                            classes="-command-palette", disabled=not enabled,
                            tooltip=binding.tooltip or binding.description)

    def watch_compact(self, compact: bool) -> None:
        if self.is_mounted:
            self.call_after_refresh(self.recompose)

    def on_resize(self) -> None:
        self.call_after_refresh(self.recompose)  # how many keys fit depends on the width
