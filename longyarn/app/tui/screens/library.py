"""The library: every story with its length, when it was last edited, and whether readers see it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from longyarn.app.session.long_notes import LongNotes
from longyarn.app.session.publishing import close_to_readers, open_to_readers
from longyarn.app.ui.formatting import format_edited, store_failure
from longyarn.app.ui.story_table import StoryTable
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Story

from ..desk import Desk
from ..notices import explain_no_model, export_story
from .dialogs import (
    ConfirmDialog,
    NewStoryDialog,
    NewStoryRequest,
    OutlineDialog,
    OutlineEdit,
    PublishChoice,
    PublishDialog,
    TextPromptDialog,
)
from .help import KeysFooter
from .writing import WritingScreen


def readers_label(story: Story) -> str:
    """The library's marker of a story open to readers, and whether they may write on."""
    if not story.readable:
        return ""
    return "published, extends" if story.reader_may_extend else "published"


class LibraryScreen(Screen):
    """The first screen: open, start, rename, delete, export and publish stories."""

    BINDINGS = [
        Binding("n", "new_story", "New story", id="new-story"),
        Binding("enter", "open_story", "Open", id="open-story", show=True),
        Binding("r", "rename_story", "Rename", id="rename-story"),
        Binding("delete,d", "delete_story", "Delete", id="delete-story"),
        Binding("x", "export_story", "Export", id="export-story"),
        Binding(
            "p", "publish_story", "Publish", id="publish-story",
            tooltip="Publish to readers, or stop publishing",
        ),
    ]

    HELP_TITLE = "Keys for the library"

    def __init__(self, desk: Desk) -> None:
        super().__init__(id="library")
        self.desk = desk

    def compose(self) -> ComposeResult:
        yield Static("longyarn · your stories", id="library-title", classes="screen-title")
        yield StoryTable(
            id="stories",
            own_columns=[("Last edited", "edited"), ("Readers", "readers")],
            length_label=lambda count: f"{count:,} ¶",
        )
        yield Static("", id="library-empty", classes="hint")
        yield Static("", id="library-model", classes="hint", markup=False)
        yield KeysFooter()

    @property
    def table(self) -> StoryTable:
        return self.query_one("#stories", StoryTable)

    @property
    def stories(self) -> list[Story]:
        return self.table.stories

    def on_mount(self) -> None:
        self.desk.model_changed.subscribe(self, self._model_changed)
        self.refresh_stories()

    def on_screen_resume(self) -> None:
        self.refresh_stories()

    def _model_changed(self, _: object = None) -> None:
        self.query_one("#library-model", Static).update(self.desk.host.summary())

    def refresh_stories(self) -> None:
        """Reload the list from the store, keeping the cursor on the same story.

        Two reads however many stories there are: the list, and every length in one query.
        """
        store = self.desk.store
        stories = store.list_stories()
        lengths = store.paragraph_counts([story.id for story in stories])
        now = self.desk.now()
        self.table.show_stories(
            stories, lengths, lambda story: (format_edited(story.updated_at, now), readers_label(story))
        )
        empty = self.query_one("#library-empty", Static)
        empty.display = not stories
        empty.update("No stories yet. Press n to start one from a genre and a premise.")
        self._model_changed()
        self.refresh_bindings()

    def selected_story(self) -> Story | None:
        return self.table.selected_story

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("open_story", "rename_story", "delete_story", "export_story", "publish_story"):
            return self.selected_story() is not None
        return True

    # ---- actions ----

    @on(DataTable.RowSelected)
    def _row_chosen(self) -> None:
        self.action_open_story()

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self) -> None:
        self.refresh_bindings()

    def action_open_story(self) -> None:
        story = self.selected_story()
        if story is not None:
            self.open_story(story.id)

    def open_story(self, story_id: str, *, write_first: bool = False) -> None:
        self.app.push_screen(WritingScreen(self.desk.session(story_id), write_first=write_first))

    def action_new_story(self) -> None:
        if self.desk.host.engine is None:
            explain_no_model(self, self.desk.host)
            return

        def create(request: NewStoryRequest | None) -> None:
            if request is not None:
                self.start_story(request)

        self.app.push_screen(NewStoryDialog(LongNotes(self.desk.host)), create)

    @work(exclusive=True, group="start-story", exit_on_error=False)
    async def start_story(self, request: NewStoryRequest) -> None:
        """The model writes a title and outline (a prose-only model's come from the premise); the
        writer may edit them, then the first step runs."""
        try:
            async with self.desk.host.in_use() as engine:
                if engine is None:  # replaced by a model that is still loading
                    explain_no_model(self, self.desk.host)
                    return
                if not engine.backend.info.prose_only:
                    # A prose-only model is not asked: the title and outline come from the
                    # premise at once, and the fallback notice below says so.
                    self.notify("The model is writing a title and an outline…", title="New story", timeout=4)
                story, fallbacks = await engine.start_story(request.premise, request.genre)
        except LongyarnError as error:
            self.notify(str(error), title="The story was not created", severity="error", timeout=12)
            return
        for sentence in fallbacks:
            self.notify(sentence, severity="warning", timeout=8)
        self.refresh_stories()
        edit = await self.app.push_screen_wait(
            OutlineDialog(story.title, story.outline, save_label="Write the first paragraph",
                          notes=LongNotes(self.desk.host, story.id))
        )
        if isinstance(edit, OutlineEdit) and (edit.title, edit.outline) != (story.title, story.outline):
            await asyncio.to_thread(
                self.desk.store.update_story, story.id, title=edit.title, outline=edit.outline
            )
        self.open_story(story.id, write_first=edit is not None)

    def action_rename_story(self) -> None:
        story = self.selected_story()
        if story is None:
            return

        def rename(title: str | None) -> None:
            if title and title != story.title:
                self.change_story(
                    lambda store: store.update_story(story.id, title=title), f"Renamed it “{title}”."
                )

        self.app.push_screen(TextPromptDialog("Rename the story", story.title, action="Rename"), rename)

    def action_delete_story(self) -> None:
        story = self.selected_story()
        if story is None:
            return
        count = self.table.lengths.get(story.id, 0)

        def delete(confirmed: bool | None) -> None:
            if confirmed:
                self.change_story(lambda store: store.delete_story(story.id), f"Deleted “{story.title}”.")

        self.app.push_screen(
            ConfirmDialog(
                f"Delete “{story.title}” and all {count:,} of its paragraphs, with every branch "
                "and memory? This cannot be undone."
            ),
            delete,
        )

    def action_export_story(self) -> None:
        story = self.selected_story()
        if story is not None:
            export_story(self, self.desk.store, story.id)

    def action_publish_story(self) -> None:
        """Open the selected story to readers, change how far they may go, or stop publishing."""
        story = self.selected_story()
        if story is None:
            return

        def publish(choice: PublishChoice | None) -> None:
            if choice is None:
                return
            if choice.published:
                extend = choice.readers_may_extend
                self.change_story(
                    lambda store: open_to_readers(store, story.id, readers_may_extend=extend),
                    f"“{story.title}” is open to readers"
                    + (", who may continue it past your last paragraph." if extend else "."),
                )
            else:
                self.change_story(
                    lambda store: close_to_readers(store, story.id),
                    f"“{story.title}” is no longer open to readers; their places are kept.",
                )

        self.app.push_screen(
            PublishDialog(
                story.title,
                published=story.readable,
                readers_may_extend=story.reader_may_extend,  # the author's last choice
            ),
            publish,
        )

    @work(group="library-change", exit_on_error=False)
    async def change_story(self, change: Callable[[StoryStore], object], done: str) -> None:
        """Run `change(store)` off the event loop (another process may hold the database's
        write lock for seconds), then say `done` and show the library as it now is."""
        try:
            await asyncio.to_thread(change, self.desk.store)
        except Exception as error:  # a locked or failing database is a notice, never a crash
            self.notify(store_failure(error, "change the story"), title="Nothing was changed",
                        severity="error", timeout=12)
        else:
            self.notify(done)
        if self.is_attached:
            self.refresh_stories()
