"""Help (F1): every key of the screen in view, the ones the footer has no room for too."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Label, Static
from textual.widgets._footer import FooterKey


# longyarn's own classes, in whichever of its packages they live (the shared widgets too).
_PACKAGE = "longyarn."

# Always true, on every screen.
GLOBAL_NOTES = (
    ("Tab, Shift+Tab", "Move between the parts of the screen"),
    ("^p", "Command palette: search every command that can run now"),
    ("^q", "Quit (an edit of the short-term memory or of a paragraph is saved first)"),
)


class KeysFooter(Footer):
    """The footer, with F1 docked right where a narrow terminal never cuts it off; the
    command palette (^p) is listed in the help instead. The actions a screen names in
    `FOOTER_LAST` come after the others, so they are the ones a narrow terminal cuts."""

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)

    def compose(self) -> ComposeResult:
        last_actions = getattr(self.screen, "FOOTER_LAST", ())
        last = []
        for widget in super().compose():
            if isinstance(widget, FooterKey) and widget.action == "help":
                widget.add_class("-command-palette")
            if isinstance(widget, FooterKey) and widget.action in last_actions:
                last.append(widget)
                continue
            yield widget
        yield from last
        self.call_after_refresh(self._hide_cut_keys)

    def bindings_changed(self, screen: Screen) -> None:
        # Under a dialog, a screen's keys are blocked and it is not laid out again: composed
        # then, its footer would lose its keys (only F1 left), dimmed behind the dialog. It
        # stays as it was; back on top, the screen's bindings are refreshed and so is it.
        if screen.is_current:
            super().bindings_changed(screen)

    def on_resize(self) -> None:
        for key in self.query(FooterKey):
            key.display = True  # measured again at the new width
        self.call_after_refresh(self._hide_cut_keys)

    def _hide_cut_keys(self, tries: int = 10) -> None:
        """Hide the first key F1 would cut and those after it, so a narrow terminal shows no
        half key (F1 lists them all)."""
        keys = list(self.query(FooterKey))
        if self.region and tries and not any(key.region for key in keys):
            # Keys just recomposed are laid out a refresh later.
            self.call_after_refresh(self._hide_cut_keys, tries - 1)
            return
        docked = [key for key in keys if key.has_class("-command-palette")]
        limit = docked[0].region.x if docked else self.region.right
        cut = False
        for key in keys:
            if key not in docked:
                cut = cut or not key.region or key.region.right > limit  # no region: out of view
                key.display = not cut


def own_bindings(node_type: type) -> list[Binding]:
    """The bindings longyarn's own classes declare for `node_type` (not Textual's built-in keys)."""
    found: list[Binding] = []
    for cls in type.mro(node_type):
        if cls.__module__.startswith(_PACKAGE):
            # A subclass's binding of a key replaces its base's, as in Textual.
            bound = {b.key for b in found}
            found.extend(
                b for b in cls.__dict__.get("BINDINGS", ()) if isinstance(b, Binding) and b.key not in bound
            )
    return found


def key_rows(app: App, bindings: Iterable[Binding]) -> list[tuple[str, str]]:
    """(keys as shown, what they do) for each described binding, the writer's keymap applied.

    A binding whose key the keymap gives to another of the same bindings is left out: Textual
    drops it (a clash), so that key does the other thing now."""
    bindings = list(bindings)
    remapped = {key.strip() for b in bindings if b.id in app.keymap for key in app.keymap[b.id].split(",")}
    rows: list[tuple[str, str]] = []
    for binding in bindings:
        if not binding.description or binding.system:
            continue
        if binding.id not in app.keymap and {key.strip() for key in binding.key.split(",")} <= remapped:
            continue
        keys = app.keymap.get(binding.id or "", binding.key) if binding.id else binding.key
        shown = ", ".join(
            app.get_key_display(replace(binding, key=key.strip(), key_display=None)) for key in keys.split(",")
        )
        rows.append((shown, binding.tooltip or binding.description))
    return rows


def key_for(app: App, node_type: type, binding_id: str) -> str:
    """How the key of `node_type`'s binding `binding_id` shows, the writer's keymap applied."""
    for binding in own_bindings(node_type):
        if binding.id == binding_id:
            keys = app.keymap.get(binding_id, binding.key).split(",")[0].strip()
            return app.get_key_display(replace(binding, key=keys, key_display=None))
    return binding_id


def help_rows(app: App, screen: Screen) -> list[tuple[str, str]]:
    """Every key of `screen`, its parts' keys (with where they work), then the app's."""
    rows = key_rows(app, own_bindings(type(screen)))
    for where, node_type in getattr(screen, "HELP_PARTS", ()):
        rows += [(keys, f"{what} ({where})") for keys, what in key_rows(app, own_bindings(node_type))]
    rows += list(getattr(screen, "HELP_NOTES", ()))
    rows += key_rows(app, own_bindings(type(app)))
    rows += list(GLOBAL_NOTES)
    unique: dict[tuple[str, str], None] = dict.fromkeys(rows)
    return list(unique)


class HelpScreen(ModalScreen[None]):
    """The keys of the screen below, one per line; Escape or F1 closes it."""

    BINDINGS = [Binding("escape,f1", "close", "Close", id="help-close")]

    def __init__(self, title: str, rows: list[tuple[str, str]]) -> None:
        super().__init__(id="help")
        self.title_text = title
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(id="help-keys"):
                for keys, what in self.rows:
                    with Horizontal(classes="help-row"):
                        yield Static(keys, classes="help-key", markup=False)
                        yield Static(what, classes="help-what", markup=False)
            yield Static("Escape closes this.", classes="hint", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
