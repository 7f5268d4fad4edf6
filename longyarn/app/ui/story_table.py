"""The table of stories that both libraries show: the writers' and the readers'."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from textual.widgets import DataTable

from longyarn.recurrent_core.types import Story

from .formatting import one_line

TITLE_CHARS = 40
GENRE_CHARS = 20


class StoryTable(DataTable):
    """One row per story, keyed by its id: title, genre, length, then the screen's own columns.

    Each library says how it words a length and what its own columns hold; the table keeps
    the cursor on the same story when the list is shown again.
    """

    def __init__(
        self,
        *,
        own_columns: Sequence[tuple[str, str]],
        length_label: Callable[[int], str],
        id: str | None = None,  # noqa: A002 (Textual's name)
    ) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.own_columns = tuple(own_columns)  # (label, key) pairs after the shared three
        self.length_label = length_label
        self.stories: list[Story] = []
        self.lengths: dict[str, int] = {}  # paragraphs by story id, as last shown

    def show_stories(
        self,
        stories: Sequence[Story],
        lengths: Mapping[str, int],
        own_cells: Callable[[Story], Sequence[str]],
    ) -> None:
        """Show `stories` in order; `lengths` are paragraph counts by story id, and
        `own_cells(story)` gives the cells of the screen's own columns."""
        if not self.columns:
            for label, key in (("Title", "title"), ("Genre", "genre"), ("Length", "length"), *self.own_columns):
                self.add_column(label, key=key)
        selected = self.selected_story
        self.stories = list(stories)
        self.lengths = {story.id: lengths.get(story.id, 0) for story in self.stories}
        self.clear()
        for story in self.stories:
            self.add_row(
                one_line(story.title, TITLE_CHARS),
                one_line(story.genre or "—", GENRE_CHARS),
                self.length_label(self.lengths[story.id]),
                *own_cells(story),
                key=story.id,
            )
        if selected is not None and any(story.id == selected.id for story in self.stories):
            self.move_cursor(row=self.get_row_index(selected.id))

    @property
    def selected_story(self) -> Story | None:
        """The story under the cursor, if there is one."""
        if not self.stories or self.row_count == 0:
            return None
        row_key, _ = self.coordinate_to_cell_key((self.cursor_row, 0))
        return next((story for story in self.stories if story.id == row_key.value), None)
