"""The reader's library: the stories open to readers, and where this reader is in each."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from longyarn.app.ui.formatting import paragraphs_label
from longyarn.app.ui.story_table import StoryTable
from longyarn.recurrent_core.types import Story

from .room import ReadingRoom
from .screens import ReadingScreen


class LibraryScreen(Screen):
    """Stories open to readers, with their genre, premise and length."""

    # priority: the table would take Enter for itself, and hide it from the footer.
    BINDINGS = [
        Binding("enter", "open_story", "Read", id="read-story", priority=True),
        Binding("ctrl+q", "app.quit", "Quit", id="library-quit"),
    ]

    def __init__(self, room: ReadingRoom) -> None:
        super().__init__(id="reader-library")
        self.room = room

    def compose(self) -> ComposeResult:
        yield Static("longyarn · stories to read", classes="screen-title")
        yield StoryTable(
            id="readable-stories",
            own_columns=[("Your place", "place")],
            length_label=lambda count: paragraphs_label(count) if count else "not begun",
        )
        yield Static("", id="story-premise", classes="premise", markup=False)
        yield Static("", id="library-empty", classes="hint")
        yield Footer(compact=True)

    @property
    def stories(self) -> list[Story]:
        return self.query_one("#readable-stories", StoryTable).stories

    def on_mount(self) -> None:
        self.refresh_stories()

    def on_screen_resume(self) -> None:
        self.refresh_stories()

    def refresh_stories(self) -> None:
        """Reload the readable stories; the reader's place shows once they are known."""
        if not self.query("#readable-stories"):
            return  # not composed yet: on_mount refreshes
        store = self.room.store
        reader = self.room.reader
        stories = [
            story for story in store.readable_stories()
            if story.reader_may_extend or story.head_step_id is not None
        ]

        def place(story: Story) -> tuple[str]:
            if reader is not None:
                position = store.reader_position(reader.id, story.id)
                if position is not None and position.step_id is not None:
                    return (f"¶ {store.count_steps(story.id, position.step_id):,}",)
            return ("—",)

        self.query_one("#readable-stories", StoryTable).show_stories(
            stories, store.paragraph_counts([story.id for story in stories]), place
        )
        empty = self.query_one("#library-empty", Static)
        empty.display = not stories
        empty.update("No stories are open to readers yet. Come back soon.")
        self._show_premise()
        self.refresh_bindings()

    def selected_story(self) -> Story | None:
        return self.query_one("#readable-stories", StoryTable).selected_story

    def _show_premise(self) -> None:
        story = self.selected_story()
        self.query_one("#story-premise", Static).update(story.premise if story else "")

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_premise()
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def _chosen(self) -> None:
        self.action_open_story()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "open_story":
            return self.selected_story() is not None and self.room.reader is not None
        return True

    def action_open_story(self) -> None:
        story = self.selected_story()
        if story is not None and self.room.reader is not None:
            self.app.push_screen(ReadingScreen(self.room, story.id))
