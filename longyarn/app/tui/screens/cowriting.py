"""Co-writing inside the text: in the paragraph editor, the model continues from the cursor
(Ctrl+G) or rewrites, expands, describes or shortens the selected passage (Ctrl+R), with the
writer's optional wish. Its proposal is shown as a diff to accept or reject; an accepted one
becomes an edit of the editor's text (Ctrl+Z in the text takes it back) and is saved as a
paragraph edit, so the paragraph's long-term memory follows it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static, TextArea

from longyarn.recurrent_core.cowriting import PassageChange, PassageTask
from longyarn.recurrent_core.errors import LongyarnError

from .craft_dialogs import ProposedChangeDialog
from .dialogs import Dialog, ParagraphEditor
from .help import key_rows

Propose = Callable[[str, int, int, PassageTask, str], Awaitable[PassageChange]]
"""(text, start, end, task, wish) -> the model's proposal for the paragraph being edited."""

TASK_LABELS = {
    "rewrite": "Rewrite it",
    "expand": "Expand it",
    "describe": "Describe more (the senses)",
    "shorten": "Shorten it",
}


class PassageTaskDialog(Dialog):
    """What the model should do with the selected passage, and the writer's wish for it.
    Dismisses with (task, wish), or None."""

    BINDINGS = [Binding("ctrl+s", "go", "Ask the model", id="passage-go")]

    def __init__(self, passage: str) -> None:
        super().__init__()
        self.passage = passage

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            shown = self.passage if len(self.passage) <= 160 else self.passage[:157] + "…"
            yield Label(f"The selected passage: “{' '.join(shown.split())}”", classes="dialog-title", markup=False)
            with RadioSet(id="passage-task"):
                for task, label in TASK_LABELS.items():
                    yield RadioButton(label, value=task == "rewrite", id=task)
            yield Label("Your wish for it (optional), e.g. “more menace”, “in Mara's voice”")
            yield Input(id="wish", max_length=500)
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Ask the model  ^s", id="go", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#passage-task").focus()

    @on(Input.Submitted, "#wish")
    @on(Button.Pressed, "#go")
    def action_go(self) -> None:
        pressed = self.query_one("#passage-task", RadioSet).pressed_button
        task = pressed.id if pressed is not None and pressed.id else "rewrite"
        self.dismiss((task, self.query_one("#wish", Input).value.strip()))


class CoWritingEditor(ParagraphEditor):
    """The paragraph editor, with the model as a co-writer in it (see the module docstring)."""

    BINDINGS = [
        Binding("ctrl+g", "continue_here", "Continue here", id="cowrite-continue",
                tooltip="The model writes on from the cursor; you accept or reject it"),
        Binding("ctrl+r", "rewrite", "Rewrite selection", id="cowrite-rewrite",
                tooltip="Rewrite, expand, describe or shorten the selected passage, with your wish"),
    ]

    def __init__(self, paragraph: str, store_edit: Callable[[str], Awaitable[bool]], propose: Propose) -> None:
        super().__init__(paragraph, store_edit)
        self.propose = propose
        self.asking = False

    @property
    def area(self) -> TextArea:
        return self.query_one("#paragraph", TextArea)

    async def on_mount(self) -> None:
        # Under the text, the co-writing keys (as the keymap has them), and while the model
        # works, what it is doing: the editor is a dialog, so no footer says either.
        await self.area.parent.mount(Static("", id="cowrite-status", classes="hint", markup=False), after=self.area)  # type: ignore[union-attr]
        self.show_keys()

    def show_keys(self) -> None:
        (continue_keys, _), (rewrite_keys, _) = key_rows(self.app, CoWritingEditor.BINDINGS)
        self.query_one("#cowrite-status", Static).update(
            f"{continue_keys}: the model writes on from the cursor · "
            f"{rewrite_keys}: rework the selected passage"
        )

    def action_continue_here(self) -> None:
        area = self.area
        cursor = area.document.get_index_from_location(area.cursor_location)
        self.ask(area.text, cursor, cursor, "continue", "")

    def action_rewrite(self) -> None:
        area = self.area
        selection = area.selection
        start, end = sorted(area.document.get_index_from_location(place) for place in (selection.start, selection.end))
        if start == end:
            self.notify("Select a passage first (shift and the arrow keys), then Ctrl+R.", severity="warning")
            return
        text = area.text

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                self.ask(text, start, end, *answer)  # type: ignore[arg-type]

        self.app.push_screen(PassageTaskDialog(text[start:end]), chosen)

    @work(group="cowrite", exclusive=True, exit_on_error=False)
    async def ask(self, text: str, start: int, end: int, task: PassageTask, wish: str) -> None:
        if self.asking:
            return
        self.asking = True
        self.area.read_only = True
        # Said in the editor for as long as it lasts (on a CPU that can be a while), not in a toast.
        self.query_one("#cowrite-status", Static).update(
            "The model is writing on from the cursor…" if task == "continue" else "The model is at work on the passage…"
        )
        try:
            change = await self.propose(text, start, end, task, wish)
        except LongyarnError as error:
            self.notify(str(error), title="The paragraph is as it was", severity="error", timeout=12)
            return
        finally:
            self.asking = False
            if self.is_attached:
                self.area.read_only = False
                self.show_keys()
        title = "The model's continuation" if task == "continue" else f"The model's proposal ({TASK_LABELS[task].lower()})"
        accepted = await self.app.push_screen_wait(ProposedChangeDialog(title, text, change.proposed))
        if not accepted:
            self.notify("Rejected; the paragraph is as it was.", timeout=4)
            return
        if self.area.text != text:  # typed meanwhile: the proposal was for the text as it was
            self.notify("The text changed while the model worked; ask again.", severity="warning")
            return
        self.area.replace(change.proposed, self.area.document.start, self.area.document.end)
        if await self.keep_edits():
            self.notify("Accepted and saved; the paragraph's long-term memory follows it.", timeout=6)
