"""The memory browser: what a paragraph's step recalled and why, search long-term memories,
pin a memory so it is always recalled, or exclude it so it never is.

It opens on the recall of the paragraph selected in the story (else the newest), read in a
thread from what the step stored with it (see `longyarn.recurrent_core.context`), so it works after a
restart too. The paragraph being written is shown from the step's own event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Awaitable, Callable, Iterable, Sequence

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Input, RadioButton, RadioSet, Static

from longyarn.app.session.engine_host import EngineHost
from longyarn.app.ui.formatting import one_line, store_failure
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import MemoryEntry, RecalledMemory

from ..notices import explain_no_model
from .context import NOT_RECORDED
from .help import KeysFooter

LIST_LIMIT = 200
MIN_EXCERPT_CHARS = 20

# (key, header, width) of the table's columns; a recall also says why each memory was recalled.
LIST_COLUMNS = (("score", "Score", 6), ("flag", "Flag", 9), ("from", "¶", 6), ("memory", "Memory", None))
RECALL_COLUMNS = (
    ("score", "Score", 6), ("recall", "Recalled", 9), ("flag", "Now", 9), ("from", "¶", 6),
    ("memory", "Memory", None),
)


@dataclass(frozen=True)
class MemoryRow:
    memory_id: str
    step_id: str  # the paragraph the memory was made from; "" if the memory no longer exists
    text: str
    score: float | None  # cosine similarity, when found by meaning or recalled
    pinned: bool  # the flags as they are now: what p and x change
    excluded: bool
    recalled_pinned: bool | None = None  # in a recall: whether it was recalled for its pin

    @classmethod
    def from_entry(cls, entry: MemoryEntry, score: float | None = None) -> "MemoryRow":
        return cls(entry.id, entry.step_id, entry.text, score, entry.pinned, entry.excluded)

    @classmethod
    def from_recalled(cls, memory: RecalledMemory) -> "MemoryRow":
        # Search by meaning skips excluded memories, so a found one is never excluded.
        return cls(memory.memory_id, memory.step_id, memory.text, memory.score, memory.pinned, False)

    @property
    def exists(self) -> bool:
        return bool(self.step_id)


def memories_label(count: int) -> str:
    return f"{count:,} memor" + ("y" if count == 1 else "ies")


def recall_rows(store: StoryStore, recalled: Iterable[RecalledMemory]) -> list[MemoryRow]:
    """A step's recall, each memory with its text and flags as stored now (in a thread)."""
    rows = []
    for memory in recalled:
        entry = store.memory_for_step(memory.step_id) if memory.step_id else None
        if entry is None or entry.id != memory.memory_id:
            row = MemoryRow(memory.memory_id, "", "", memory.score, False, False, memory.pinned)
        else:
            row = replace(MemoryRow.from_entry(entry, memory.score), recalled_pinned=memory.pinned)
        rows.append(row)
    return rows


def load_recall(store: StoryStore, step_id: str) -> list[MemoryRow] | None:
    """What a stored step recalled; None if its context was not recorded (in a thread)."""
    record = store.step_context(step_id)
    return None if record is None else recall_rows(store, record.recalled)


class MemoryScreen(Screen):
    """Long-term memories of one story, opened on what one paragraph recalled."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="memories-back"),
        Binding("ctrl+f", "focus_search", "Search", id="memories-search"),
        Binding("r", "show_recall", "Recall", id="memory-recall"),
        Binding("p", "toggle_pin", "Pin/unpin", id="memory-pin"),
        Binding("x", "toggle_exclude", "Exclude/include", id="memory-exclude"),
    ]

    HELP_TITLE = "Keys for the long-term memory"
    HELP_NOTES = (
        ("enter", "Search, in the search box: by words, or by meaning when “meaning” is chosen"),
        ("↑, ↓", "Choose a memory; its whole text shows below the table"),
    )

    def __init__(
        self,
        store: StoryStore,
        host: EngineHost,
        story_id: str,
        *,
        paragraph: str = "",
        step_id: str | None = None,
        recalled: Sequence[RecalledMemory] | None = None,
        branch: Sequence[str] = (),
        set_flags: Callable[..., Awaitable[MemoryEntry]] | None = None,
    ) -> None:
        """Open on the recall of `step_id` as stored, or on `recalled` (the paragraph being
        written); neither: every memory. `paragraph` names it ("Paragraph 4"); `branch` is the
        story's step ids as shown, oldest first, to number the paragraphs memories came from.
        `set_flags(entry, pinned=..., excluded=...)` stores a flag as an undoable change (the
        writing session's); without it the store is changed directly."""
        super().__init__(id="memory-browser")
        self.store, self.host = store, host
        self.story_id = story_id
        self.paragraph = paragraph
        self.step_id = step_id
        self.live_recall = tuple(recalled) if recalled is not None else None
        self.numbers = {step: number for number, step in enumerate(branch, 1)}
        self.rows: list[MemoryRow] = []
        self.recall: list[MemoryRow] | None = None  # the paragraph's recall, once read
        self.showing_recall = False
        self.searched = False
        self._flag_lock = asyncio.Lock()  # one flag write at a time, each from the latest flags
        self.set_flags = set_flags
        self.excerpt_chars = MIN_EXCERPT_CHARS  # the memory column's width, fitted to the table

    def compose(self) -> ComposeResult:
        title = f"Long-term memory · {self._paragraph_words()}" if self.paragraph else "Long-term memory"
        yield Static(title, classes="screen-title", markup=False)
        with Horizontal(id="memory-search-bar"):
            yield Input(placeholder="Search memories (Enter)", id="memory-query")
            with RadioSet(id="memory-mode"):
                yield RadioButton("words", value=True, id="words")
                yield RadioButton("meaning", id="meaning")
        yield Static("", id="memory-notice", classes="hint", markup=False)
        yield Static("", id="memory-caption", markup=False)
        yield DataTable(id="memory-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="memory-text", markup=False)
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one("#memory-notice").display = False
        self._set_columns(LIST_COLUMNS)
        self.call_after_refresh(self._fit_columns)
        if self.step_id is not None or self.live_recall is not None:
            self.query_one("#memory-caption", Static).update(f"Reading what {self._paragraph_words()} recalled…")
        self.load()
        self.query_one("#memory-table").focus()

    @work(exclusive=True, group="memory-load", exit_on_error=False)
    async def load(self) -> None:
        store = self.store
        try:
            if self.live_recall is not None:
                recall = await asyncio.to_thread(recall_rows, store, self.live_recall)
            elif self.step_id is not None:
                recall = await asyncio.to_thread(load_recall, store, self.step_id)
            else:
                recall = None
            entries = [] if recall is not None else await asyncio.to_thread(
                store.search_memories, self.story_id, "", LIST_LIMIT
            )
        except Exception as error:
            if not self.searched:
                self.query_one("#memory-caption", Static).update(
                    store_failure(error, "read this story's memories")
                )
            return
        if recall is not None:
            self.recall = recall
        if self.searched:  # the writer's search came first: keep its rows (r shows the recall)
            self.refresh_bindings()
            return
        if recall is not None:
            self.show_recall()
            return
        if self.step_id is not None:
            self._show_notice(NOT_RECORDED)
        self.show_rows(
            [MemoryRow.from_entry(e) for e in entries],
            f"{memories_label(len(entries))} in this story; search to narrow them down.",
        )

    def _paragraph_words(self) -> str:
        return self.paragraph[:1].lower() + self.paragraph[1:] if self.paragraph else "the paragraph"

    def show_recall(self) -> None:
        recall = self.recall or []
        count = len(recall)
        what = self.paragraph or "The paragraph"
        if count:
            caption = (
                f"{what} recalled {memories_label(count)}: pinned ones always, "
                "then the most similar to its instruction (cosine score)."
            )
        else:
            caption = f"{what} recalled no memories; search to see the story's memories."
        self._show_notice(None)
        self.show_rows(recall, caption, recall=True)

    def _show_notice(self, notice: str | None) -> None:
        widget = self.query_one("#memory-notice", Static)
        widget.update(notice or "")
        widget.display = notice is not None

    def _set_columns(self, columns: tuple) -> None:
        table = self.query_one("#memory-table", DataTable)
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, key=key, width=width or self.excerpt_chars)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_columns)

    def _excerpt_room(self) -> int:
        table = self.query_one("#memory-table", DataTable)
        columns = RECALL_COLUMNS if self.showing_recall else LIST_COLUMNS
        padding = 2 * table.cell_padding
        fixed = sum(width + padding for _, _, width in columns if width)
        # Room for the vertical scrollbar too, which appears once the rows outgrow the table.
        room = table.size.width - table.styles.scrollbar_size_vertical - fixed - padding
        return max(MIN_EXCERPT_CHARS, room)

    def _fit_columns(self) -> None:
        """Make the memory column fill what the table has left, so it never scrolls sideways;
        the selected memory's whole text shows below the table."""
        if not self.is_attached:
            return
        chars = self._excerpt_room()
        if chars == self.excerpt_chars:
            return
        self.excerpt_chars = chars
        table = self.query_one("#memory-table", DataTable)
        cursor = table.cursor_row
        self._set_columns(RECALL_COLUMNS if self.showing_recall else LIST_COLUMNS)
        for row in self.rows:
            table.add_row(*self._cells(row).values(), key=row.memory_id)
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))

    def show_rows(self, rows: list[MemoryRow], caption: str, *, recall: bool = False) -> None:
        if not self.is_attached:
            return
        self.rows = rows
        self.query_one("#memory-caption", Static).update(caption)
        if recall != self.showing_recall:
            self.showing_recall = recall
            self.excerpt_chars = self._excerpt_room()
            self._set_columns(RECALL_COLUMNS if recall else LIST_COLUMNS)
        table = self.query_one("#memory-table", DataTable)
        table.clear()
        for row in rows:
            table.add_row(*self._cells(row).values(), key=row.memory_id)
        self._show_selected_text()
        self.refresh_bindings()

    def _cells(self, row: MemoryRow) -> dict[str, str]:
        cells = {"score": f"{row.score:.2f}" if row.score is not None else "—"}
        if self.showing_recall:
            cells["recall"] = "★ pinned" if row.recalled_pinned else "by score"
        cells["flag"] = "excluded" if row.excluded else ("★ pinned" if row.pinned else "")
        number = self.numbers.get(row.step_id)
        cells["from"] = f"{number:,}" if number else "—"
        cells["memory"] = one_line(row.text, self.excerpt_chars) if row.exists else "(no longer stored)"
        return cells

    def selected_row(self) -> MemoryRow | None:
        table = self.query_one("#memory-table", DataTable)
        if not self.rows or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key((table.cursor_row, 0))
        return next((r for r in self.rows if r.memory_id == row_key.value), None)

    @on(DataTable.RowHighlighted)
    def _show_selected_text(self) -> None:
        row = self.selected_row()
        self.query_one("#memory-text", Static).update(self._describe(row) if row else "")
        self.refresh_bindings()

    def _describe(self, row: MemoryRow) -> str:
        if not row.exists:
            return "This memory is no longer stored, so it cannot be pinned or excluded."
        number = self.numbers.get(row.step_id)
        source = (
            f"From paragraph {number:,}:" if number
            else "From a paragraph that is not in the story as it reads now (another version, or deleted):"
        )
        return f"{source}\n{row.text}"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pin", "toggle_exclude"):
            row = self.selected_row()
            return row is not None and row.exists
        if action == "show_recall":
            return self.recall is not None and not self.showing_recall
        return True

    def action_show_recall(self) -> None:
        if self.recall is not None:
            self.show_recall()

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
            engine = self.host.engine
            if engine is None:
                explain_no_model(self, self.host)
                return
            try:
                found = await engine.search_memories_by_meaning(self.story_id, text, k=10)
            except LongyarnError as error:
                self.notify(str(error), severity="error")
                return
            rows = [MemoryRow.from_recalled(m) for m in found]
            caption = (
                f"{memories_label(len(found))} closest in meaning to “{one_line(text, 40)}” "
                "(cosine score; excluded memories are never recalled)."
            )
        else:
            try:
                entries = await asyncio.to_thread(self.store.search_memories, self.story_id, text, LIST_LIMIT)
            except Exception as error:
                self.notify(store_failure(error, "search the memories"), severity="error")
                return
            what = f"containing “{one_line(text, 40)}”" if text else "in this story"
            rows = [MemoryRow.from_entry(e) for e in entries]
            caption = f"{memories_label(len(entries))} {what}."
        self.searched = True
        self._show_notice(None)
        self.show_rows(rows, caption)
        self.query_one("#memory-table").focus()

    # ---- flags ----

    def action_toggle_pin(self) -> None:
        row = self.selected_row()
        if row is not None and row.exists:
            self.toggle_flag(row.memory_id, "pinned")

    def action_toggle_exclude(self) -> None:
        row = self.selected_row()
        if row is not None and row.exists:
            self.toggle_flag(row.memory_id, "excluded")

    @work(group="memory-flags", exit_on_error=False)
    async def toggle_flag(self, memory_id: str, flag: str) -> None:
        """Store the flag in a thread (another longyarn may hold the database for a while)."""
        async with self._flag_lock:
            row = next((r for r in self.rows if r.memory_id == memory_id), None)
            if row is None:
                return
            try:
                change = {flag: not getattr(row, flag)}
                if self.set_flags is not None:
                    current = MemoryEntry(row.memory_id, self.story_id, row.step_id, row.text, row.pinned, row.excluded)
                    entry = await self.set_flags(current, **change)
                else:
                    entry = await asyncio.to_thread(self.store.set_memory_flags, memory_id, **change)
            except Exception as error:
                self.notify(store_failure(error, "change the memory's flag"), severity="error", timeout=12)
                return
            self._show_flags(entry)
        if entry.excluded:
            self.notify("Excluded: this memory will not be recalled (x includes it again).")
        elif entry.pinned:
            self.notify("Pinned: this memory is recalled in every step (p unpins it).")

    def _show_flags(self, entry: MemoryEntry) -> None:
        def updated(rows: list[MemoryRow]) -> list[MemoryRow]:
            return [
                replace(r, pinned=entry.pinned, excluded=entry.excluded) if r.memory_id == entry.id else r
                for r in rows
            ]

        self.rows = updated(self.rows)
        if self.recall is not None:
            self.recall = updated(self.recall)
        if not self.is_attached:
            return
        row = next((r for r in self.rows if r.memory_id == entry.id), None)
        if row is not None:
            self.query_one("#memory-table", DataTable).update_cell(entry.id, "flag", self._cells(row)["flag"])
        self.refresh_bindings()
