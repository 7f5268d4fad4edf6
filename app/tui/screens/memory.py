"""The memory browser: search long-term memories, see what the last step recalled and why,
pin a memory so it is always recalled, or exclude it so it never is."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, RadioButton, RadioSet, Static

from recurrent_core.errors import LongyarnError
from recurrent_core.types import MemoryEntry, RecalledMemory

from ..formatting import one_line

if TYPE_CHECKING:
    from ..app import LongyarnApp

LIST_LIMIT = 200


@dataclass(frozen=True)
class MemoryRow:
    memory_id: str
    text: str
    score: float | None  # cosine similarity, when found by meaning
    pinned: bool
    excluded: bool

    @classmethod
    def from_entry(cls, entry: MemoryEntry) -> "MemoryRow":
        return cls(entry.id, entry.text, None, entry.pinned, entry.excluded)

    @classmethod
    def from_recalled(cls, memory: RecalledMemory) -> "MemoryRow":
        # Recall skips excluded memories, so a recalled one is never excluded.
        return cls(memory.memory_id, memory.text, memory.score, memory.pinned, False)


class MemoryScreen(Screen):
    """Long-term memories of one story."""

    app: "LongyarnApp"

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="memories-back"),
        Binding("ctrl+f", "focus_search", "Search", id="memories-search"),
        Binding("p", "toggle_pin", "Pin/unpin", id="memory-pin"),
        Binding("x", "toggle_exclude", "Exclude/include", id="memory-exclude"),
    ]

    def __init__(self, story_id: str, recalled: tuple[RecalledMemory, ...] | None) -> None:
        super().__init__(id="memory-browser")
        self.story_id = story_id
        self.recalled = recalled
        self.rows: list[MemoryRow] = []

    def compose(self) -> ComposeResult:
        yield Static("Long-term memory", classes="screen-title")
        with Horizontal(id="memory-search-bar"):
            yield Input(placeholder="Search memories (Enter)", id="memory-query")
            with RadioSet(id="memory-mode"):
                yield RadioButton("words", value=True, id="words")
                yield RadioButton("meaning", id="meaning")
        yield Static("", id="memory-caption", markup=False)
        yield DataTable(id="memory-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="memory-text", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#memory-table", DataTable)
        table.add_column("Score", key="score", width=6)
        table.add_column("Flag", key="flag", width=9)
        table.add_column("Memory", key="memory")
        if self.recalled is not None:
            self.show_rows(
                [MemoryRow.from_recalled(m) for m in self.recalled],
                f"The last step recalled {len(self.recalled)} "
                f"memor{'y' if len(self.recalled) == 1 else 'ies'}: pinned ones always, then the "
                "most similar to its instruction (cosine score).",
            )
        else:
            entries = self.app.store.search_memories(self.story_id, "", limit=LIST_LIMIT)
            self.show_rows(
                [MemoryRow.from_entry(e) for e in entries],
                f"{len(entries)} memories (no step has run since the story was opened); "
                "search to narrow them down.",
            )
        table.focus()

    def show_rows(self, rows: list[MemoryRow], caption: str) -> None:
        self.rows = rows
        self.query_one("#memory-caption", Static).update(caption)
        table = self.query_one("#memory-table", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*self._cells(row), key=row.memory_id)
        self._show_selected_text()
        self.refresh_bindings()

    def _cells(self, row: MemoryRow) -> tuple[str, str, str]:
        score = f"{row.score:.2f}" if row.score is not None else "—"
        flag = "excluded" if row.excluded else ("★ pinned" if row.pinned else "")
        return score, flag, one_line(row.text, 200)

    def selected_row(self) -> MemoryRow | None:
        table = self.query_one("#memory-table", DataTable)
        if not self.rows or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key((table.cursor_row, 0))
        return next((r for r in self.rows if r.memory_id == row_key.value), None)

    @on(DataTable.RowHighlighted)
    def _show_selected_text(self) -> None:
        row = self.selected_row()
        self.query_one("#memory-text", Static).update(row.text if row else "")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pin", "toggle_exclude"):
            return self.selected_row() is not None
        return True

    # ---- search ----

    def action_focus_search(self) -> None:
        self.query_one("#memory-query").focus()

    @on(Input.Submitted, "#memory-query")
    def _search(self, event: Input.Submitted) -> None:
        pressed = self.query_one("#memory-mode", RadioSet).pressed_button
        by_meaning = pressed is not None and pressed.id == "meaning"
        self.search(event.value.strip(), by_meaning)

    @work(exclusive=True, group="memory-search", exit_on_error=False)
    async def search(self, text: str, by_meaning: bool) -> None:
        if by_meaning and text:
            engine = self.app.engine
            if engine is None:
                self.app.explain_no_model()
                return
            try:
                found = await engine.search_memories_by_meaning(self.story_id, text, k=10)
            except LongyarnError as error:
                self.notify(str(error), severity="error")
                return
            self.show_rows(
                [MemoryRow.from_recalled(m) for m in found],
                f"{len(found)} memories closest in meaning to “{one_line(text, 40)}” "
                "(cosine score; excluded memories are never recalled).",
            )
        else:
            entries = await asyncio.to_thread(self.app.store.search_memories, self.story_id, text, LIST_LIMIT)
            what = f"containing “{one_line(text, 40)}”" if text else "in this story"
            self.show_rows([MemoryRow.from_entry(e) for e in entries], f"{len(entries)} memories {what}.")
        self.query_one("#memory-table").focus()

    # ---- flags ----

    def action_toggle_pin(self) -> None:
        row = self.selected_row()
        if row is not None:
            self._set_flags(row, pinned=not row.pinned)

    def action_toggle_exclude(self) -> None:
        row = self.selected_row()
        if row is not None:
            self._set_flags(row, excluded=not row.excluded)

    def _set_flags(self, row: MemoryRow, **flags: bool) -> None:
        entry = self.app.store.set_memory_flags(row.memory_id, **flags)
        updated = replace(row, pinned=entry.pinned, excluded=entry.excluded)
        self.rows = [updated if r.memory_id == row.memory_id else r for r in self.rows]
        table = self.query_one("#memory-table", DataTable)
        table.update_cell(row.memory_id, "flag", self._cells(updated)[1])
        if entry.excluded:
            self.notify("Excluded: this memory will not be recalled (x includes it again).")
        elif entry.pinned:
            self.notify("Pinned: this memory is recalled in every step (p unpins it).")
        self.refresh_bindings()
