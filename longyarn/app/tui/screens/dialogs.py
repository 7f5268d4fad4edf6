"""Small modal dialogs: confirm, save or discard an edit, one line of text, a paragraph, a new
story, an outline, how many paragraphs to keep writing, export, publishing to readers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static, Switch, TextArea

from longyarn.app.session.long_notes import LongNotes
from longyarn.app.ui.widgets import ProseArea

from .long_note import ChecksLongNotes


class Dialog(ModalScreen):
    """A centred box; Escape closes it with no result."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()


class ConfirmDialog(Dialog):
    """Ask a yes/no question; dismisses with True only when the person confirms."""

    def __init__(self, question: str, confirm_label: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Keep it", id="cancel")
                yield Button(self.confirm_label, id="confirm", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel").focus()  # the safe answer is the default

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def _confirm(self) -> None:
        self.dismiss(True)


class TextPromptDialog(Dialog):
    """One line of text (a title, a path); dismisses with the text, or None."""

    def __init__(self, title: str, value: str = "", *, placeholder: str = "", action: str = "OK") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.action_label = action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="text")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self.action_label, id="ok", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        text = self.query_one("#text", Input).value.strip()
        if text:
            self.dismiss(text)
        else:
            self.notify("Write something first, or press Escape to cancel.", severity="warning")


class UnsavedEditDialog(Dialog):
    """Ask what to do with an edit that is not saved. Dismisses with "save", "discard", or
    None to keep editing (the default, and what Escape does)."""

    BINDINGS = [
        Binding("escape", "cancel", "Keep editing", id="dialog-cancel"),
        Binding("ctrl+s", "save", "Save", id="unsaved-save"),
    ]

    def __init__(self, question: str, save_label: str = "Save") -> None:
        super().__init__()
        self.question = question
        self.save_label = save_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Keep editing", id="cancel")
                yield Button("Discard", id="discard", variant="error")
                yield Button(f"{self.save_label}  ^s", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#cancel").focus()  # the safe answer is the default

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        self.dismiss("save")

    @on(Button.Pressed, "#discard")
    def _discard(self) -> None:
        self.dismiss("discard")


class EditingDialog(Dialog):
    """A dialog holding the writer's words. Escape (or Cancel) closes it at once when nothing
    was changed; otherwise it asks first: keep editing (the default), save, or discard."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="dialog-cancel",
                tooltip="Close; if you changed anything, ask first: keep editing, save or discard"),
    ]

    unsaved_question = "You changed this. Save the change?"
    unsaved_save_label = "Save"  # what the question's save button says; it runs `save_edit`

    # Each editing dialog defines these two.
    @property
    def changed(self) -> bool:
        """Whether the words differ from those the dialog opened with."""
        raise NotImplementedError

    def save_edit(self) -> None:
        """Save the words, as the dialog's own Save does."""
        raise NotImplementedError

    def action_cancel(self) -> None:
        if not self.changed:
            self.dismiss(None)
            return
        ask_before_closing(self, self.unsaved_question, self.save_edit, self.unsaved_save_label)


def ask_before_closing(screen: Screen, question: str, save: Callable[[], object], save_label: str = "Save") -> None:
    """Ask whether to save the changed words: save runs `save`, discard closes `screen`, and
    keep editing (the default) leaves it open."""

    def answered(choice: str | None) -> None:
        if choice == "save":
            save()
        elif choice == "discard":
            screen.dismiss(None)

    screen.app.push_screen(UnsavedEditDialog(question, save_label), answered)


class ParagraphEditor(EditingDialog):
    """Edit a paragraph. Ctrl+S stores it through `store_edit` and closes once it is stored; if
    it cannot be, the editor stays open with the writer's words. Escape closes, asking first
    when the paragraph was changed. Dismisses with None (the edit is stored by `store_edit`)."""

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="dialog-cancel",
                tooltip="Close; if you changed the paragraph, ask first: keep editing, save or discard"),
        Binding("ctrl+s", "save", "Save", id="paragraph-save"),
    ]

    def __init__(self, paragraph: str, store_edit: Callable[[str], Awaitable[bool]]) -> None:
        """`store_edit(text)` stores the edited paragraph; False (having said why) if it could not."""
        super().__init__()
        self.paragraph = paragraph
        self.store_edit = store_edit
        self._saving: asyncio.Task[bool] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Edit the paragraph (its long-term memory follows)", classes="dialog-title")
            yield ProseArea(self.paragraph, id="paragraph")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save  ^s", id="save", variant="primary")

    def edited_text(self) -> str:
        return self.query_one("#paragraph", TextArea).text.strip()

    @property
    def changed(self) -> bool:
        return self.is_mounted and self.edited_text() != self.paragraph.strip()

    unsaved_question = "You changed this paragraph. Save the change?"

    def action_cancel(self) -> None:
        if self._saving is None:  # else it closes by itself once stored
            super().action_cancel()

    def save_edit(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        if self._saving is not None:
            return
        if not self.edited_text():
            self.notify("A paragraph cannot be empty; delete it instead.", severity="warning")
            return
        self._close_once_stored()

    @work(group="paragraph-save", exit_on_error=False)
    async def _close_once_stored(self) -> None:
        if await self.keep_edits():
            self.dismiss(None)

    async def keep_edits(self) -> bool:
        """Store the paragraph if it was changed; False if it could not be (the words stay here).
        Quitting calls this too, so that closing the app never loses the edit."""
        if self._saving is None:
            text = self.edited_text() if self.is_mounted else ""
            if not text or text == self.paragraph.strip():
                return True
            self._saving = asyncio.create_task(self._store(text))
            self._show_saving(True)
        # Shielded: a cancelled caller must not cancel the write.
        return await asyncio.shield(self._saving)

    async def _store(self, text: str) -> bool:
        try:
            stored = await self.store_edit(text)
        finally:
            self._saving = None
            self._show_saving(False)
        if stored:
            self.paragraph = text
        return stored

    def _show_saving(self, saving: bool) -> None:
        if not self.is_attached:
            return
        self.query_one("#paragraph", TextArea).read_only = saving
        button = self.query_one("#save", Button)
        button.disabled = saving
        button.label = "Saving…" if saving else "Save  ^s"


@dataclass(frozen=True)
class NewStoryRequest:
    premise: str
    genre: str


class NewStoryDialog(ChecksLongNotes, EditingDialog):
    """A genre and a premise; the title and outline come from them (written by the model, or
    taken from the premise for a prose-only model), for the writer to edit before writing.
    A premise too long for the prompts is met with the offer of a summary (`notes`)."""

    BINDINGS = [Binding("ctrl+s", "create", "Create", id="new-story-create")]

    def __init__(self, notes: LongNotes | None = None) -> None:
        super().__init__()
        self.notes = notes
        self._kept_long: set[str] = set()

    unsaved_question = "You started a new story. Create it, or discard what you wrote?"
    unsaved_save_label = "Create"

    @property
    def changed(self) -> bool:
        return self.is_mounted and bool(
            self.query_one("#genre", Input).value.strip() or self.query_one("#premise", TextArea).text.strip()
        )

    def save_edit(self) -> None:
        self.action_create()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("A new story", classes="dialog-title")
            yield Label("Genre")
            yield Input(placeholder="e.g. gothic mystery, space opera, fable", id="genre")
            yield Label("Premise: what is the story about?")
            yield ProseArea(id="premise")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create  ^s", id="create", variant="primary")

    @on(Button.Pressed, "#create")
    def action_create(self) -> None:
        premise = self.query_one("#premise", TextArea).text.strip()
        if not premise:
            self.notify("Write a premise first: a sentence or two about the story.", severity="warning")
            self.query_one("#premise").focus()
            return
        if self.offers_summary("premise", "#premise", then=self.action_create):
            return
        self.dismiss(NewStoryRequest(premise, self.query_one("#genre", Input).value.strip()))

    @on(Input.Submitted, "#genre")
    def _genre_done(self) -> None:
        self.query_one("#premise").focus()


@dataclass(frozen=True)
class OutlineEdit:
    title: str
    outline: str


class OutlineDialog(ChecksLongNotes, EditingDialog):
    """The story's title and outline, which every step reads; dismisses with the edit, or None.
    An outline too long for the prompts is met with the offer of a summary (`notes`)."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="outline-save")]

    unsaved_question = "You changed the title or the outline. Save the change?"

    def __init__(self, title: str, outline: str, *, save_label: str = "Save", notes: LongNotes | None = None) -> None:
        super().__init__()
        self.story_title = title
        self.outline = outline
        self.save_label = self.unsaved_save_label = save_label
        self.notes = notes
        self._kept_long: set[str] = set()

    def edit(self) -> OutlineEdit:
        return OutlineEdit(
            self.query_one("#title", Input).value.strip(), self.query_one("#outline", TextArea).text.strip()
        )

    @property
    def changed(self) -> bool:
        return self.is_mounted and self.edit() != OutlineEdit(self.story_title.strip(), self.outline.strip())

    def save_edit(self) -> None:
        self.action_save()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Title")
            yield Input(self.story_title, id="title")
            yield Label("Outline (every paragraph is written with it in view)")
            yield ProseArea(self.outline, id="outline")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(f"{self.save_label}  ^s", id="save", variant="primary")

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        edit = self.edit()
        if not edit.title or not edit.outline:
            self.notify("The title and the outline both need some words.", severity="warning")
            return
        if edit.outline != self.outline.strip() and self.offers_summary("outline", "#outline", then=self.action_save):
            return
        self.dismiss(edit)


KEEP_WRITING_MOST = 100


class KeepWritingDialog(Dialog):
    """How many paragraphs to write one after another; dismisses with the number, or None.

    It names "the first of the three next instructions", not the model's proposal: a prose-only
    model (the bundled demo) proposes none; they are derived from its paragraph."""

    def __init__(self, first: str | None, default: int = 5) -> None:
        """`first`: the instruction the first paragraph follows (None: the story's opening)."""
        super().__init__()
        self.first = first
        self.default = default

    def compose(self) -> ComposeResult:
        if self.first is None:
            first = "The first paragraph opens the story"
        else:
            first = f"The first paragraph follows “{self.first}”"
        with Vertical(classes="dialog wide"):
            yield Label("Keep writing", classes="dialog-title")
            yield Static(
                f"{first}; each after it follows the first of the three next instructions, as "
                "longyarn batch does. Each paragraph is saved as it lands; Escape stops.",
                classes="dialog-text",
                markup=False,
            )
            yield Label(f"How many paragraphs? (1 to {KEEP_WRITING_MOST})")
            yield Input(str(self.default), id="count", type="integer")
            yield Static("", id="count-problem", classes="problem", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Start", id="start", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#count-problem").display = False
        self.query_one("#count", Input).focus()

    @on(Input.Submitted, "#count")
    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        raw = self.query_one("#count", Input).value.strip()
        count = int(raw) if raw.lstrip("-").isdigit() else 0
        if 1 <= count <= KEEP_WRITING_MOST:
            self.dismiss(count)
            return
        problem = self.query_one("#count-problem", Static)
        problem.update(f"Give a whole number of paragraphs from 1 to {KEEP_WRITING_MOST}.")
        problem.display = True
        self.query_one("#count", Input).focus()


@dataclass(frozen=True)
class ExportRequest:
    path: Path
    fmt: str  # "md", "txt", "docx" or "epub"


class ExportDialog(Dialog):
    """Where to write the story, as Markdown, plain text, a Word document or an e-book."""

    def __init__(self, default_path: Path) -> None:
        super().__init__()
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Export the story (the current branch)", classes="dialog-title")
            with RadioSet(id="format"):
                yield RadioButton("Markdown", value=True, id="md")
                yield RadioButton("Plain text", id="txt")
                yield RadioButton("Word (.docx)", id="docx")
                yield RadioButton("E-book (.epub)", id="epub")
            yield Label("Write to")
            yield Input(str(self.default_path), id="path")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Export", id="export", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#path").focus()

    @on(RadioSet.Changed)
    def _format_changed(self, event: RadioSet.Changed) -> None:
        path_input = self.query_one("#path", Input)
        path = Path(path_input.value.strip() or str(self.default_path))
        path_input.value = str(path.with_suffix("." + self._format()))

    def _format(self) -> str:
        pressed = self.query_one("#format", RadioSet).pressed_button
        return pressed.id if pressed is not None and pressed.id else "md"

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#export")
    def _export(self) -> None:
        raw = self.query_one("#path", Input).value.strip()
        if not raw:
            self.notify("Give a file path to write to.", severity="warning")
            return
        self.dismiss(ExportRequest(Path(raw).expanduser(), self._format()))


@dataclass(frozen=True)
class PublishChoice:
    """What the author chose in the publish dialog."""

    published: bool
    readers_may_extend: bool


class PublishDialog(Dialog):
    """Open a story to readers, change how far they may go, or stop publishing it.

    Dismisses with a `PublishChoice`, or None when nothing should change.
    """

    def __init__(self, title: str, *, published: bool, readers_may_extend: bool) -> None:
        super().__init__()
        self.story_title = title
        self.published = published
        self.readers_may_extend = readers_may_extend

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            if self.published:
                yield Label(f"“{self.story_title}” is open to readers", classes="dialog-title", markup=False)
            else:
                yield Label(f"Publish “{self.story_title}” to readers", classes="dialog-title", markup=False)
            yield Static(
                "Readers find it in the reading room (`longyarn read`) and choose where it goes; "
                "their choices never change your story.",
                classes="dialog-text",
                markup=False,
            )
            with Horizontal(classes="switch-row"):
                yield Switch(value=self.readers_may_extend, id="readers-may-extend")
                yield Label("Readers may continue past your last paragraph (new paragraphs are written for them)")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                if self.published:
                    yield Button("Stop publishing", id="unpublish", variant="error")
                yield Button("Save" if self.published else "Publish", id="publish", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#readers-may-extend").focus()

    @on(Button.Pressed, "#publish")
    def _publish(self) -> None:
        self.dismiss(PublishChoice(True, self.query_one("#readers-may-extend", Switch).value))

    @on(Button.Pressed, "#unpublish")
    def _unpublish(self) -> None:
        self.dismiss(PublishChoice(False, self.readers_may_extend))
