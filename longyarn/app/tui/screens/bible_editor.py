"""The story bible's entry editor: name, kind, aliases, secondary keys, description, notes, the
*always* pin, and the entry's facts with their paragraphs (add, edit, end at a paragraph,
remove).

Nothing is stored until Save (Ctrl+S), and then all of it at once, as one undoable step of the
writer's history. A problem (a name taken, a fact that ends before it starts) is the bible's
one sentence above the buttons, and every word typed stays where it was.
"""

from __future__ import annotations

from dataclasses import replace

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Input, Label, Select, Static, Switch, TextArea

from longyarn.app.session.bible import BibleUpdate, BibleView, StoryBible
from longyarn.app.session.bible_writes import EditedFact, entry_edit_between
from longyarn.app.ui.formatting import one_line, store_failure
from longyarn.app.ui.widgets import ProseArea
from longyarn.recurrent_core.bible import (
    ENTRY_KINDS,
    BibleEntry,
    EntryDraft,
    FactDraft,
    check_fact_range,
    check_fact_text,
)
from longyarn.recurrent_core.errors import BibleError

from .bible_shared import fact_cells, split_keys, typed_paragraph
from .dialogs import ask_before_closing
from .help import KeysFooter

KIND_CHOICES = [(kind.title(), kind) for kind in ENTRY_KINDS]
NEW_ENTRY_FIELDS = {
    "name": "", "kind": "character", "aliases": (), "secondary_keys": (), "description": "", "notes": "",
    "always": False,
}
# Columns of the facts' table besides the fact's text (their widths with the table's padding).
FACT_SPAN_WIDTH, FACT_STATE_WIDTH, FACT_COLUMNS_PADDING = 9, 16, 6


class FactTable(DataTable):
    """The entry's facts, each with its paragraphs and whether it holds now."""

    BINDINGS = [
        Binding("e", "screen.edit_fact", "Edit fact", id="fact-edit"),
        Binding("x", "screen.end_fact", "End fact", id="fact-end",
                tooltip="End the fact at a paragraph: the current one, or the one you type"),
        Binding("delete,d", "screen.remove_fact", "Remove fact", id="fact-remove"),
    ]


class EntryEditorScreen(Screen[str | None]):
    """Edit one entry (or a new one, or the model's proposed one); dismisses with the entry's
    name once it is stored, or None."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="entry-save"),
        Binding("escape", "close", "Close", id="entry-close",
                tooltip="Close; if you changed anything, ask first: keep editing, save or discard"),
    ]

    HELP_TITLE = "Keys for the entry editor"
    HELP_PARTS = (("in the facts", FactTable),)
    HELP_NOTES = (
        ("enter", "In a fact's fields: add the fact, or keep your change to it"),
        ("enter", "In the facts: edit the highlighted fact"),
    )

    def __init__(
        self, bible: StoryBible, view: BibleView, entry: BibleEntry | None = None, *, proposal: BibleUpdate | None = None
    ) -> None:
        """`entry`: the entry to edit (None: a new one); `proposal`: a proposed new entry, which
        saving accepts as edited here."""
        super().__init__(id="entry-editor")
        self.bible = bible
        self.paragraph = view.paragraph
        self.entry = entry
        self.proposal = proposal
        source = entry or (proposal.entry if proposal is not None else None)
        self.start_fields = dict(NEW_ENTRY_FIELDS) if source is None else {
            name: getattr(source, name) for name in NEW_ENTRY_FIELDS
        }
        kind = str(self.start_fields["kind"]).strip().lower()
        self.start_fields["kind"] = kind if kind in ENTRY_KINDS else "lore"
        self.shown = view.facts_of(entry) if entry is not None else []
        if entry is not None:
            self.facts = [EditedFact(f.text, f.from_paragraph, f.until_paragraph, f) for f in self.shown]
        elif proposal is not None and proposal.entry is not None:
            self.facts = [EditedFact(f.text, f.from_paragraph, f.until_paragraph) for f in proposal.entry.facts]
        else:
            self.facts = []
        self.start_facts = list(self.facts)
        self.editing: int | None = None  # the fact in the fact's fields, if one is being edited
        self.saving = False
        self.saved_name: str | None = None

    # ---- layout ----

    def compose(self) -> ComposeResult:
        fields = self.start_fields
        yield Static(self._title(), classes="screen-title", markup=False)
        with VerticalScroll(id="entry-form"):
            with Horizontal(classes="entry-row"):
                with Vertical(classes="entry-field"):
                    yield Label("Name")
                    yield Input(str(fields["name"]), id="entry-name")
                with Vertical(classes="entry-kind"):
                    yield Label("Kind")
                    yield Select(KIND_CHOICES, value=fields["kind"], allow_blank=False, id="entry-kind")
                with Vertical(classes="entry-always"):
                    yield Label("Always in the prompt")
                    yield Switch(bool(fields["always"]), id="entry-always")
            with Horizontal(classes="entry-row"):
                with Vertical(classes="entry-field"):
                    yield Label("Aliases (comma-separated)")
                    yield Input(", ".join(fields["aliases"]), id="entry-aliases")  # type: ignore[arg-type]
                with Vertical(classes="entry-field"):
                    yield Label("Secondary keys (comma-separated)")
                    yield Input(", ".join(fields["secondary_keys"]), id="entry-keys")  # type: ignore[arg-type]
            yield Label("Description: what the model is told")
            yield ProseArea(str(fields["description"]), id="entry-description")
            yield Label("Notes: yours, never sent to the model")
            yield ProseArea(str(fields["notes"]), id="entry-notes")
            yield Label(f"Facts, as at paragraph {self.paragraph} (dimmed: ended, or not yet in force)")
            yield FactTable(id="entry-facts", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="fact-fields"):
                yield Input(placeholder="A fact: what holds", id="fact-text")
                yield Input(placeholder="from ¶ (1)", id="fact-from", type="integer")
                yield Input(placeholder="until ¶", id="fact-until", type="integer")
                yield Button("Add fact", id="fact-add")
            yield Static("", id="fact-hint", classes="hint", markup=False)
        yield Static("", id="entry-problem", classes="problem", markup=False)
        with Horizontal(classes="buttons"):
            yield Button("Cancel", id="cancel")
            yield Button("Accept  ^s" if self.proposal is not None else "Save  ^s", id="save", variant="primary")
        yield KeysFooter()

    def _title(self) -> str:
        if self.proposal is not None:
            return f"Story bible · proposed after paragraph {self.proposal.paragraph or '?'}: edit it, then accept it"
        if self.entry is None:
            return "Story bible · a new entry"
        return f"Story bible · {self.entry.kind} {self.entry.name!r}"

    def on_mount(self) -> None:
        self.show_problem(None)
        self.call_after_refresh(self._show_facts)
        self._show_fact_hint()
        self.query_one("#entry-name").focus()

    def on_resize(self) -> None:
        self.call_after_refresh(self._show_facts)

    # ---- the form ----

    def form_fields(self) -> dict[str, object]:
        return {
            "name": self.query_one("#entry-name", Input).value,
            "kind": self.query_one("#entry-kind", Select).value,
            "aliases": split_keys(self.query_one("#entry-aliases", Input).value),
            "secondary_keys": split_keys(self.query_one("#entry-keys", Input).value),
            "description": self.query_one("#entry-description", TextArea).text.strip(),
            "notes": self.query_one("#entry-notes", TextArea).text.strip(),
            "always": self.query_one("#entry-always", Switch).value,
        }

    @property
    def changed(self) -> bool:
        """Whether anything differs from what the editor opened with (a fact half typed too)."""
        if not self.is_mounted:
            return False
        start = {**self.start_fields, "aliases": tuple(self.start_fields["aliases"]),  # type: ignore[arg-type]
                 "secondary_keys": tuple(self.start_fields["secondary_keys"])}  # type: ignore[arg-type]
        typed = self.query_one("#fact-text", Input).value.strip()
        return self.form_fields() != start or self.facts != self.start_facts or bool(typed)

    def show_problem(self, problem: str | None) -> None:
        widget = self.query_one("#entry-problem", Static)
        widget.update(problem or "")
        widget.display = problem is not None

    # ---- facts ----

    def _show_facts(self, cursor: int | None = None) -> None:
        if not self.is_attached:
            return
        table = self.query_one(FactTable)
        row = table.cursor_row if cursor is None else cursor
        width = max(20, table.size.width - FACT_SPAN_WIDTH - FACT_STATE_WIDTH - FACT_COLUMNS_PADDING - 2)
        table.clear(columns=True)
        table.add_column("¶", width=FACT_SPAN_WIDTH - 2)
        table.add_column("Fact", width=width)
        table.add_column("Now", width=FACT_STATE_WIDTH - 2)
        for number, fact in enumerate(self.facts):
            note = "new" if fact.source is None else ("changed" if self._differs(fact) else "")
            cells = fact_cells(one_line(fact.text, width), fact.from_paragraph, fact.until_paragraph,  # type: ignore[arg-type]
                               self.paragraph, note=note)
            table.add_row(*cells, key=str(number))
        if self.facts:
            table.move_cursor(row=max(0, min(row, len(self.facts) - 1)))
        self.refresh_bindings()

    @staticmethod
    def _differs(fact: EditedFact) -> bool:
        source = fact.source
        return source is not None and (fact.text, fact.from_paragraph, fact.until_paragraph) != (
            source.text, source.from_paragraph, source.until_paragraph
        )

    def _cursor_fact(self) -> int | None:
        table = self.query_one(FactTable)
        return table.cursor_row if self.facts and table.row_count else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit_fact", "end_fact", "remove_fact"):
            return bool(self.facts)
        return True

    @on(Input.Submitted, "#fact-text, #fact-from, #fact-until")
    @on(Button.Pressed, "#fact-add")
    def _fact_entered(self) -> None:
        self.keep_fact()

    def keep_fact(self) -> bool:
        """Add the fact in the fact's fields (or keep the change to the one being edited), once
        the bible's checks pass; else say why in one sentence, keeping what was typed."""
        text_input = self.query_one("#fact-text", Input)
        start = typed_paragraph(self.query_one("#fact-from", Input).value, 1)
        end = typed_paragraph(self.query_one("#fact-until", Input).value, None)
        try:
            text = check_fact_text(text_input.value)
            check_fact_range(start, end)  # type: ignore[arg-type]
        except BibleError as error:
            self.show_problem(str(error))
            return False
        source = self.facts[self.editing].source if self.editing is not None else None
        fact = EditedFact(text, start, end, source)  # type: ignore[arg-type]
        if self.editing is None:
            self.facts.append(fact)
            at = len(self.facts) - 1
        else:
            self.facts[self.editing] = fact
            at = self.editing
        self._clear_fact_fields()
        self.show_problem(None)
        self._show_facts(at)
        text_input.focus()
        return True

    def _clear_fact_fields(self) -> None:
        for widget_id in ("#fact-text", "#fact-from", "#fact-until"):
            self.query_one(widget_id, Input).value = ""
        self.editing = None
        self._show_fact_hint()

    def _load_fact(self, index: int) -> EditedFact:
        fact = self.facts[index]
        self.editing = index
        self.query_one("#fact-text", Input).value = fact.text
        self.query_one("#fact-from", Input).value = str(fact.from_paragraph)
        self.query_one("#fact-until", Input).value = "" if fact.until_paragraph is None else str(fact.until_paragraph)
        return fact

    def _show_fact_hint(self, hint: str = "") -> None:
        if not hint:
            hint = (
                f"Editing fact {self.editing + 1}: Enter keeps the change."
                if self.editing is not None
                else "Enter adds the fact typed here; in the facts: e edits, x ends, delete removes."
            )
        self.query_one("#fact-hint", Static).update(hint)
        self.query_one("#fact-add", Button).label = "Keep fact" if self.editing is not None else "Add fact"

    @on(DataTable.RowSelected, "#entry-facts")
    def action_edit_fact(self) -> None:
        index = self._cursor_fact()
        if index is None:
            return
        self._load_fact(index)
        self._show_fact_hint()
        self.query_one("#fact-text", Input).focus()

    def action_end_fact(self) -> None:
        """End the highlighted fact at the current paragraph, or at the one the writer types."""
        index = self._cursor_fact()
        if index is None:
            return
        self._load_fact(index)
        until = self.query_one("#fact-until", Input)
        until.value = str(self.paragraph)
        self._show_fact_hint(
            f"Ends at paragraph {self.paragraph} (its last): Enter keeps it, or type another paragraph."
        )
        self.query_one("#fact-add", Button).label = "Keep fact"
        until.focus()

    def action_remove_fact(self) -> None:
        index = self._cursor_fact()
        if index is None:
            return
        del self.facts[index]
        if self.editing == index:
            self._clear_fact_fields()
        elif self.editing is not None and self.editing > index:
            self.editing -= 1
            self._show_fact_hint()
        self._show_facts(index)

    # ---- saving and closing ----

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self.saving:
            return
        if self.query_one("#fact-text", Input).value.strip() and not self.keep_fact():
            return  # a fact typed but not added: added first, or its problem said
        self.saving = True
        self._save_and_close()

    @work(group="entry-save", exit_on_error=False)
    async def _save_and_close(self) -> None:
        try:
            stored = await self.store_edit()
        finally:
            self.saving = False
        if stored:
            self.dismiss(self.saved_name)

    async def store_edit(self) -> bool:
        """Store the entry as the form holds it, as one undoable step; False, having said why
        in one sentence, if it could not be (the form keeps every word)."""
        fields = self.form_fields()
        self.saved_name = None
        try:
            if self.entry is not None:
                edit = entry_edit_between(self.entry, fields, self.shown, self.facts)
                if not edit:
                    return True  # nothing to store
                self.entry = await self.bible.edit_entry(self.entry, edit)
            else:
                facts = tuple(FactDraft(f.text, f.from_paragraph, f.until_paragraph) for f in self.facts)  # type: ignore[arg-type]
                draft = EntryDraft(**fields, facts=facts)  # type: ignore[arg-type]
                if self.proposal is not None:
                    edited = replace(self.proposal, entry=draft, entry_name=draft.name)
                    await self.bible.accept(self.proposal, edited)
                else:
                    await self.bible.add_entry(draft)
        except Exception as error:
            problem = store_failure(error, "save the entry")
            if self.is_attached:
                self.show_problem(problem)
            return False
        self.saved_name = " ".join(str(fields["name"]).split())
        return True

    async def keep_edits(self) -> bool:
        """Store what was changed (quitting calls this); False if it could not be."""
        if not self.changed:
            return True
        if self.query_one("#fact-text", Input).value.strip() and not self.keep_fact():
            return False
        return await self.store_edit()

    @on(Button.Pressed, "#cancel")
    def action_close(self) -> None:
        if self.saving:
            return
        if not self.changed:
            self.dismiss(None)
            return
        ask_before_closing(self, "You changed this entry. Save the change?", self.action_save)
