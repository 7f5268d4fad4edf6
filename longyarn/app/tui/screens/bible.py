"""The story bible panel: entries by kind, a search, and everything about the highlighted entry,
its facts as at the current paragraph (ended and later ones dimmed, with their paragraphs).

From here the writer adds, edits, pins (*always*) and removes entries, and opens the updates the
model proposed. Every change is one step of the writer's history (Ctrl+Z undoes it here, or on
the writing screen); the panel reads the bible again after each, and after every undo.
"""

from __future__ import annotations

from typing import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from longyarn.app.session.bible import BibleView, StoryBible, pending_label
from longyarn.app.session.engine_host import EngineHost
from longyarn.app.ui.formatting import store_failure
from longyarn.recurrent_core.bible import BibleEntry

from .bible_editor import EntryEditorScreen
from .bible_shared import BibleHistoryKeys, entry_detail, entry_label, entry_matches, kind_heading
from .bible_updates import BibleUpdatesScreen
from .dialogs import ConfirmDialog
from .help import KeysFooter, key_for

EMPTY_BIBLE = (
    "The story bible is empty. Press n to add a character, place, object, group, piece of lore "
    "or rule: its name, aliases, description and dated facts."
)


class BibleScreen(BibleHistoryKeys, Screen):
    """The story's bible, as at the current paragraph."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="bible-back"),
        Binding("ctrl+f", "focus_search", "Search", id="bible-search"),
        Binding("n", "new_entry", "New", id="bible-new"),
        Binding("e", "edit_entry", "Edit", id="bible-edit"),
        Binding("p", "toggle_always", "Always", id="bible-always",
                tooltip="Pin the entry to every prompt, or unpin it"),
        Binding("delete,d", "remove_entry", "Remove", id="bible-remove"),
        Binding("u", "updates", "Updates", id="bible-queue",
                tooltip="The updates the model proposed: accept, edit or reject each"),
        Binding("ctrl+z", "undo", "Undo", id="undo"),
        Binding("ctrl+y", "redo", "Redo", id="redo"),
    ]

    HELP_TITLE = "Keys for the story bible"
    HELP_NOTES = (
        ("enter", "Edit the highlighted entry (in the list)"),
        ("enter", "Go from the search box to the entries it found"),
        ("↑, ↓", "Choose an entry; everything about it shows on the right"),
    )

    def __init__(
        self, bible: StoryBible, host: EngineHost, *, story_title: str = "", busy: Callable[[], bool] = lambda: False
    ) -> None:
        """`busy()`: whether the writing screen is writing a paragraph or storing a move (undo
        waits for it)."""
        super().__init__(id="bible")
        self.bible = bible
        self.host = host
        self.story_title = story_title
        self.is_busy = busy
        self.view: BibleView | None = None
        self.shown: list[BibleEntry] = []  # the entries the search left, in the list's order
        self.wanted_entry: str | None = None  # an entry's id (or name) to highlight once shown
        self.storing = False  # a pin or a removal is being stored: keys wait, so none acts on old state
        self._stop_listening: Callable[[], None] | None = None

    def compose(self) -> ComposeResult:
        yield Static("Story bible", id="bible-title", classes="screen-title", markup=False)
        yield Input(placeholder="Search names, aliases, descriptions and facts", id="bible-query")
        with Horizontal(id="bible-body"):
            yield OptionList(id="bible-entries", markup=False)
            with VerticalScroll(id="bible-detail-scroll"):
                yield Static("Reading the bible…", id="bible-detail")
        yield Static("", id="bible-status", classes="hint", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        self._stop_listening = self.bible.listen(self.load)
        self.load()
        self.query_one("#bible-entries").focus()

    def on_unmount(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()

    @work(exclusive=True, group="bible-load", exit_on_error=False)
    async def load(self) -> None:
        """Read the bible again (after any change, undo or redo) and show it."""
        try:
            self.view = await self.bible.read()
        except Exception as error:
            if self.is_attached:
                self.query_one("#bible-detail", Static).update(store_failure(error, "read the story bible"))
            return
        self.show_entries()

    # ---- showing ----

    def show_entries(self) -> None:
        if self.view is None or not self.is_attached:
            return
        view = self.view
        query = self.query_one("#bible-query", Input).value
        highlighted = self.wanted_entry or (self.highlighted_entry().id if self.highlighted_entry() else None)
        self.wanted_entry = None
        self.shown = [entry for entry in view.entries if entry_matches(entry, view.facts_of(entry), query)]
        options: list[Option] = []
        kind = None
        for entry in self.shown:
            if entry.kind != kind:
                kind = entry.kind
                options.append(Option(kind_heading(kind), disabled=True))
            options.append(Option(entry_label(entry), id=entry.id))
        entries = self.query_one("#bible-entries", OptionList)
        entries.clear_options()
        entries.add_options(options)
        target = next((e for e in self.shown if highlighted in (e.id, e.name)), self.shown[0] if self.shown else None)
        if target is not None:
            entries.highlighted = entries.get_option_index(target.id)
        self._show_title()
        self.show_detail()

    def _show_title(self) -> None:
        view = self.view
        if view is None:
            return
        where = f"at paragraph {view.paragraphs}" if view.paragraphs else "before the first paragraph"
        count = len(view.entries)
        parts = ["Story bible", self.story_title, where, f"{count} entr{'y' if count == 1 else 'ies'}"]
        if len(self.shown) != count:
            parts.append(f"{len(self.shown)} found")
        waiting = len(self.bible.pending)
        if waiting:
            parts.append(f"{pending_label(waiting)} ({key_for(self.app, type(self), 'bible-queue')})")
        self.query_one("#bible-title", Static).update(" · ".join(part for part in parts if part))

    def highlighted_entry(self) -> BibleEntry | None:
        entries = self.query_one("#bible-entries", OptionList)
        if entries.highlighted is None or entries.option_count == 0:
            return None
        option_id = entries.get_option_at_index(entries.highlighted).id
        return next((entry for entry in self.shown if entry.id == option_id), None)

    @on(OptionList.OptionHighlighted, "#bible-entries")
    def show_detail(self) -> None:
        detail = self.query_one("#bible-detail", Static)
        entry = self.highlighted_entry()
        if self.view is None:
            return
        if entry is None:
            empty = not self.view.entries
            detail.update(Content(EMPTY_BIBLE if empty else "No entry has those words; change the search."))
        else:
            detail.update(entry_detail(entry, self.view.facts_of(entry), self.view.paragraph))
        self.refresh_bindings()

    def show_status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#bible-status", Static).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit_entry", "toggle_always", "remove_entry"):
            return self.highlighted_entry() is not None
        if action == "undo":
            return self.bible.history.can_undo
        if action == "redo":
            return self.bible.history.can_redo
        return True

    # ---- search ----

    def action_focus_search(self) -> None:
        self.query_one("#bible-query").focus()

    @on(Input.Changed, "#bible-query")
    def _search(self) -> None:
        self.show_entries()

    @on(Input.Submitted, "#bible-query")
    def _to_the_list(self) -> None:
        self.query_one("#bible-entries").focus()

    # ---- changes ----

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_new_entry(self) -> None:
        if self.view is not None:
            self.app.push_screen(EntryEditorScreen(self.bible, self.view), self._edited)

    @on(OptionList.OptionSelected, "#bible-entries")
    def action_edit_entry(self) -> None:
        entry = self.highlighted_entry()
        if entry is not None and self.view is not None:
            self.app.push_screen(EntryEditorScreen(self.bible, self.view, entry), self._edited)

    def _edited(self, name: str | None) -> None:
        if name:
            self.wanted_entry = name
            self.show_status(f"Saved {name!r}; {key_for(self.app, type(self), 'undo')} undoes it.")
            self.load()

    def action_toggle_always(self) -> None:
        entry = self.highlighted_entry()
        if entry is not None and not self.storing:
            self.storing = True
            self._store_always(entry)

    @work(group="bible-change", exit_on_error=False)
    async def _store_always(self, entry: BibleEntry) -> None:
        try:
            await self.bible.set_always(entry, not entry.always)
            self.view = await self.bible.read()  # shown before the next key acts on it
            self.show_entries()
        except Exception as error:
            self._tell_failure(error, "change the entry's pin")
            return
        finally:
            self.storing = False
        said = "is in every prompt now" if not entry.always else "goes into a prompt only when named now"
        self.show_status(f"{entry.name!r} {said}; {key_for(self.app, type(self), 'undo')} undoes it.")

    def action_remove_entry(self) -> None:
        entry = self.highlighted_entry()
        if entry is None or self.view is None:
            return
        facts = len(self.view.facts_of(entry))
        question = (
            f"Remove the {entry.kind} {entry.name!r} and its facts ({facts} on this branch) from the "
            f"bible? {key_for(self.app, type(self), 'undo')} brings it all back."
        )

        def remove(confirmed: bool | None) -> None:
            if confirmed and not self.storing:
                self.storing = True
                self._store_removal(entry)

        self.app.push_screen(ConfirmDialog(question, "Remove"), remove)

    @work(group="bible-change", exit_on_error=False)
    async def _store_removal(self, entry: BibleEntry) -> None:
        try:
            await self.bible.remove_entry(entry)
        except Exception as error:
            self._tell_failure(error, "remove the entry")
            return
        finally:
            self.storing = False
        self.show_status(f"Removed {entry.name!r}; {key_for(self.app, type(self), 'undo')} brings it back.")

    def _tell_failure(self, error: Exception, what: str) -> None:
        problem = store_failure(error, what)
        self.show_status(problem)
        self.notify(problem, title="The bible is as it was", severity="error", timeout=12)

    def action_updates(self) -> None:
        self.app.push_screen(BibleUpdatesScreen(self.bible, self.host, busy=self.is_busy))
