"""A premise or outline long enough to crowd the story out of its prompts: a warning when it is
entered, and the offer of a summary (see `longyarn.app.session.long_notes`)."""

from __future__ import annotations

from typing import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from longyarn.app.session.long_notes import LongNotes
from longyarn.recurrent_core.errors import LongyarnError


class LongNoteDialog(ModalScreen[str | None]):
    """Keep a long premise or outline as it is, or have it summarised. Dismisses with "keep",
    "summarise", or None to go on editing (Escape, the default)."""

    BINDINGS = [
        Binding("escape", "cancel", "Keep editing", id="long-note-cancel"),
        Binding("ctrl+s", "summarise", "Summarise", id="long-note-summarise"),
    ]

    def __init__(self, what: str, warning: str) -> None:
        super().__init__()
        self.what = what
        self.warning = warning

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"A long {self.what}", classes="dialog-title", markup=False)
            yield Static(self.warning, id="long-note-warning", classes="dialog-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Keep editing", id="cancel")
                yield Button("Keep it as it is", id="keep")
                yield Button("Summarise it  ^s", id="summarise", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#summarise").focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#keep")
    def _keep(self) -> None:
        self.dismiss("keep")

    @on(Button.Pressed, "#summarise")
    def action_summarise(self) -> None:
        self.dismiss("summarise")


class ChecksLongNotes:
    """Mixed into the dialogs where a premise or outline is entered: before they close with a
    long one, `offers_summary` asks whether to keep it or have it summarised in place (the
    summary replaces the text as one edit, so Ctrl+Z in the text brings back what was there)."""

    notes: LongNotes | None
    _kept_long: set[str]

    def offers_summary(self, what: str, selector: str, then: Callable[[], None]) -> bool:
        """True when it asked (and `then` runs once the writer keeps the text as it is)."""
        area = self.query_one(selector, TextArea)  # type: ignore[attr-defined]
        text = area.text.strip()
        if self.notes is None or what in self._kept_long or not self.notes.is_long(text):
            return False

        def answered(choice: str | None) -> None:
            if choice == "keep":
                self._kept_long.add(what)
                then()
            elif choice == "summarise":
                self._summarise(what, selector, text)

        self.app.push_screen(LongNoteDialog(what, self.notes.warning(what, text)), answered)  # type: ignore[attr-defined]
        return True

    @work(group="summary", exclusive=True, exit_on_error=False)
    async def _summarise(self, what: str, selector: str, text: str) -> None:
        assert self.notes is not None
        area = self.query_one(selector, TextArea)  # type: ignore[attr-defined]
        area.read_only = True
        self.notify(f"The model is summarising the {what}…", timeout=4)  # type: ignore[attr-defined]
        try:
            summary = await self.notes.summarise(what, text)
        except LongyarnError as error:
            self.notify(str(error), title=f"The {what} is as you wrote it", severity="error", timeout=12)  # type: ignore[attr-defined]
            return
        finally:
            area.read_only = False
        area.replace(summary, area.document.start, area.document.end)
        self.notify(  # type: ignore[attr-defined]
            f"The {what} is summarised: edit the summary or save it; Ctrl+Z in the text brings back what you wrote.",
            title="Summarised",
            timeout=10,
        )
