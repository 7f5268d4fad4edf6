"""Dialogs of the craft tools: the author's note, goals, and a change the model proposes."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Input, Label, Static, TextArea

from longyarn.app.ui.widgets import ProseArea
from longyarn.recurrent_core.role_prompts import AuthorsNote

from .dialogs import Dialog, EditingDialog

MAX_NOTE_DEPTH = 6


class AuthorsNoteDialog(EditingDialog):
    """The story's author's note and how deep in the writer's prompt it goes. Dismisses with the
    `AuthorsNote` to save (an empty text removes it), or None."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="note-save")]

    unsaved_question = "You changed the author's note. Save the change?"

    def __init__(self, note: AuthorsNote) -> None:
        super().__init__()
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Author's note", classes="dialog-title")
            yield Static(
                "Style, tone, point of view, tense: what every paragraph should keep to. It goes into "
                "the writer's prompt at the depth below (0: last, right before the instruction, where "
                "it weighs most), and the planner reads it too.",
                classes="dialog-text",
                markup=False,
            )
            yield ProseArea(self.note.text, id="note")
            yield Label(f"Depth (0 to {MAX_NOTE_DEPTH}: how many parts of the context come after it)")
            yield Input(str(self.note.depth), id="depth", type="integer")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save  ^s", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#note").focus()

    def edited(self) -> AuthorsNote | None:
        raw = self.query_one("#depth", Input).value.strip()
        if not raw.isdigit() or int(raw) > MAX_NOTE_DEPTH:
            return None
        return AuthorsNote(self.query_one("#note", TextArea).text.strip(), int(raw))

    @property
    def changed(self) -> bool:
        return self.is_mounted and self.edited() != AuthorsNote(self.note.text.strip(), self.note.depth)

    def save_edit(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        note = self.edited()
        if note is None:
            self.notify(f"The depth is a whole number from 0 to {MAX_NOTE_DEPTH}.", severity="warning")
            self.query_one("#depth").focus()
            return
        self.dismiss(note)


@dataclass(frozen=True)
class Goals:
    story_words: int  # 0: none
    session_words: int


class GoalsDialog(Dialog):
    """A word goal for the story and one for this session. Dismisses with `Goals`, or None."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="goals-save")]

    def __init__(self, goals: Goals, counts_line: str) -> None:
        super().__init__()
        self.goals = goals
        self.counts_line = counts_line

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Goals", classes="dialog-title")
            yield Static(f"Now: {self.counts_line}.", id="goals-now", classes="dialog-text", markup=False)
            yield Label("Words for the whole story (0: no goal)")
            yield Input(str(self.goals.story_words), id="story-goal", type="integer")
            yield Label("Words to write in this session (0: no goal)")
            yield Input(str(self.goals.session_words), id="session-goal", type="integer")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save  ^s", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#story-goal").focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        values = [self.query_one(f"#{name}", Input).value.strip() or "0" for name in ("story-goal", "session-goal")]
        if not all(value.isdigit() for value in values):
            self.notify("A goal is a whole number of words, or 0 for none.", severity="warning")
            return
        self.dismiss(Goals(int(values[0]), int(values[1])))


class ProposedChangeDialog(Dialog):
    """A change the model proposes to a paragraph, as a diff: what goes and what comes. Accept
    (Ctrl+S) dismisses with True; Escape or Reject with False."""

    BINDINGS = [
        Binding("ctrl+s", "accept", "Accept", id="change-accept"),
        Binding("escape", "reject", "Reject", id="change-reject"),
    ]

    def __init__(self, title: str, original: str, proposed: str) -> None:
        super().__init__()
        self.title_text = title
        self.original = original
        self.proposed = proposed

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static("Struck through: what goes. Underlined: what the model proposes.", classes="hint")
            with VerticalScroll(id="change-diff"):
                yield Static(diff_content(self.original, self.proposed), id="change-text")
            with Horizontal(classes="buttons"):
                yield Button("Reject", id="reject", variant="error")
                yield Button("Accept  ^s", id="accept", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#accept").focus()

    @on(Button.Pressed, "#accept")
    def action_accept(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#reject")
    def action_reject(self) -> None:
        self.dismiss(False)


def diff_content(original: str, proposed: str) -> Content:
    """Word by word: words only in `original` struck through, words only in `proposed` underlined."""
    import difflib
    import re

    # A word with the space after it is one piece, so a changed phrase reads as one change.
    before, after = re.findall(r"\s+|\S+\s*", original), re.findall(r"\s+|\S+\s*", proposed)
    parts: list[tuple[str, str] | str] = []
    for operation, a0, a1, b0, b1 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if operation == "equal":
            parts.append("".join(before[a0:a1]))
            continue
        if a1 > a0:
            parts.append(("".join(before[a0:a1]), "strike $text-error"))
        if b1 > b0:
            parts.append(("".join(after[b0:b1]), "underline $text-success"))
    return Content.assemble(*parts)


def deleted_and_inserted(content: Content) -> tuple[str, str]:
    """The struck and underlined text of a diff (for tests and screen readers)."""
    struck = "".join(content.plain[span.start : span.end] for span in content.spans if "strike" in str(span.style))
    underlined = "".join(
        content.plain[span.start : span.end] for span in content.spans if "underline" in str(span.style)
    )
    return struck, underlined
