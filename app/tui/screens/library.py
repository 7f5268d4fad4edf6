"""The library: every story with its length and when it was last edited."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from recurrent_core.errors import LongyarnError
from recurrent_core.types import Story

from ..formatting import format_edited, one_line
from .dialogs import ConfirmDialog, NewStoryDialog, NewStoryRequest, OutlineDialog, OutlineEdit, TextPromptDialog

if TYPE_CHECKING:
    from ..app import LongyarnApp


class LibraryScreen(Screen):
    """The first screen: open, start, rename, delete and export stories."""

    app: "LongyarnApp"

    BINDINGS = [
        Binding("n", "new_story", "New story", id="new-story"),
        Binding("enter", "open_story", "Open", id="open-story", show=True),
        Binding("r", "rename_story", "Rename", id="rename-story"),
        Binding("delete,d", "delete_story", "Delete", id="delete-story"),
        Binding("x", "export_story", "Export", id="export-story"),
    ]

    def __init__(self) -> None:
        super().__init__(id="library")
        self.stories: list[Story] = []

    def compose(self) -> ComposeResult:
        yield Static("longyarn · your stories", id="library-title", classes="screen-title")
        yield DataTable(id="stories", cursor_type="row", zebra_stripes=True)
        yield Static("", id="library-empty", classes="hint")
        yield Static("", id="library-model", classes="hint", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#stories", DataTable)
        table.add_column("Title", key="title")
        table.add_column("Genre", key="genre")
        table.add_column("Length", key="length")
        table.add_column("Last edited", key="edited")
        self.refresh_stories()

    def on_screen_resume(self) -> None:
        self.refresh_stories()

    def refresh_stories(self) -> None:
        """Reload the list from the store, keeping the cursor on the same story."""
        table = self.query_one("#stories", DataTable)
        selected = self.selected_story()
        store = self.app.store
        self.stories = store.list_stories()
        now = self.app.now()
        table.clear()
        for story in self.stories:
            count = store.count_steps(story.id)
            table.add_row(
                one_line(story.title, 40),
                one_line(story.genre or "—", 20),
                f"{count:,} ¶",
                format_edited(story.updated_at, now),
                key=story.id,
            )
        if selected is not None and any(s.id == selected.id for s in self.stories):
            table.move_cursor(row=table.get_row_index(selected.id))
        empty = self.query_one("#library-empty", Static)
        empty.display = not self.stories
        empty.update("No stories yet. Press n to start one from a genre and a premise.")
        self.query_one("#library-model", Static).update(self.app.model_summary())
        self.refresh_bindings()

    def selected_story(self) -> Story | None:
        table = self.query_one("#stories", DataTable)
        if not self.stories or table.cursor_row is None or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key((table.cursor_row, 0))
        return next((s for s in self.stories if s.id == row_key.value), None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("open_story", "rename_story", "delete_story", "export_story"):
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
            self.app.open_story(story.id)

    def action_new_story(self) -> None:
        if self.app.engine is None:
            self.app.explain_no_model()
            return

        def create(request: NewStoryRequest | None) -> None:
            if request is not None:
                self.start_story(request)

        self.app.push_screen(NewStoryDialog(), create)

    @work(exclusive=True, group="start-story", exit_on_error=False)
    async def start_story(self, request: NewStoryRequest) -> None:
        """The model writes a title and outline; the writer may edit them, then the first step runs."""
        engine = self.app.engine
        assert engine is not None
        self.notify("The model is writing a title and an outline…", title="New story", timeout=4)
        try:
            story, fallbacks = await engine.start_story(request.premise, request.genre)
        except LongyarnError as error:
            self.notify(str(error), title="The story was not created", severity="error", timeout=12)
            return
        for sentence in fallbacks:
            self.notify(sentence, severity="warning", timeout=8)
        self.refresh_stories()
        edit = await self.app.push_screen_wait(
            OutlineDialog(story.title, story.outline, save_label="Write the first paragraph")
        )
        if isinstance(edit, OutlineEdit) and (edit.title, edit.outline) != (story.title, story.outline):
            await asyncio.to_thread(
                self.app.store.update_story, story.id, title=edit.title, outline=edit.outline
            )
        self.app.open_story(story.id, write_first=edit is not None)

    def action_rename_story(self) -> None:
        story = self.selected_story()
        if story is None:
            return

        def rename(title: str | None) -> None:
            if title and title != story.title:
                self.app.store.update_story(story.id, title=title)
                self.refresh_stories()

        self.app.push_screen(TextPromptDialog("Rename the story", story.title, action="Rename"), rename)

    def action_delete_story(self) -> None:
        story = self.selected_story()
        if story is None:
            return
        count = self.app.store.count_steps(story.id)

        def delete(confirmed: bool | None) -> None:
            if confirmed:
                self.app.store.delete_story(story.id)
                self.notify(f"Deleted “{story.title}”.")
                self.refresh_stories()

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
            self.app.export_story(story.id)
