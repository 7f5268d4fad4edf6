"""Contradictions the continuity check found in a paragraph: each fact beside the sentence that
contradicts it, and the writer's three ways out: rewrite the paragraph (the paragraph editor),
retry it (write it again), or update the fact (the old one ends at the paragraph before, the
new one holds from this paragraph on). Mixed into `WritingScreen` as `ContinuityTools`."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Static

from longyarn.app.session.continuity import contradictions_of, paragraph_number, update_contradicted_fact
from longyarn.app.session.writing import WritingSession
from longyarn.app.ui.formatting import store_failure
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import Contradiction, StepCompleted

from .dialogs import Dialog
from .help import key_for

Choice = Literal["rewrite", "retry", "updated"]


class ContradictionsDialog(Dialog):
    """One paragraph's contradictions, one at a time; dismisses with the writer's choice."""

    BINDINGS = [
        Binding("ctrl+o", "rewrite", "Rewrite", id="contradiction-rewrite", tooltip="Open the paragraph editor"),
        Binding("ctrl+r", "retry", "Retry", id="contradiction-retry", tooltip="Write the paragraph again"),
        Binding("ctrl+s", "update_fact", "Update fact", id="contradiction-update",
                tooltip="End the fact at the paragraph before, and let the new one hold from this one"),
        Binding("ctrl+n", "next", "Next", id="contradiction-next", tooltip="The paragraph's next contradiction"),
    ]

    def __init__(
        self, paragraph: int, found: tuple[Contradiction, ...],
        update: Callable[[Contradiction, str], Awaitable[str | None]],
    ) -> None:
        """`update(contradiction, new fact)` updates the fact: the problem in one sentence, or None."""
        super().__init__()
        self.paragraph = paragraph
        self.found = found
        self.update = update
        self.index = 0
        self.updating = False

    @property
    def current(self) -> Contradiction:
        return self.found[self.index]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide", id="contradiction"):
            yield Label("", id="contradiction-title", classes="dialog-title", markup=False)
            with Horizontal(id="contradiction-pair"):
                with Vertical():
                    yield Label("The fact")
                    yield Static("", id="contradiction-fact", markup=False)
                with Vertical():
                    yield Label("The sentence")
                    yield Static("", id="contradiction-sentence", markup=False)
            yield Static("", id="contradiction-why", classes="muted", markup=False)
            yield Label("The fact as it holds from this paragraph on")
            yield Input("", id="contradiction-new-fact")
            yield Static("", id="contradiction-problem", classes="problem", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Close", id="cancel")
                yield Button("Rewrite  ^o", id="rewrite")
                yield Button("Retry  ^r", id="retry")
                yield Button("Update fact  ^s", id="update", variant="primary")

    def on_mount(self) -> None:
        self.show_current()

    def show_current(self) -> None:
        found = self.current
        more = f" ({self.index + 1} of {len(self.found)}; ^n: next)" if len(self.found) > 1 else ""
        self.query_one("#contradiction-title", Label).update(f"Paragraph {self.paragraph} may contradict the story bible{more}")
        self.query_one("#contradiction-fact", Static).update(f"{found.entry_name}: {found.fact}")
        self.query_one("#contradiction-sentence", Static).update(found.sentence)
        self.query_one("#contradiction-why", Static).update(found.explanation)
        self.query_one("#contradiction-new-fact", Input).value = found.fact
        self.query_one("#contradiction-problem").display = False

    def action_next(self) -> None:
        self.index = (self.index + 1) % len(self.found)
        self.show_current()

    @on(Button.Pressed, "#rewrite")
    def action_rewrite(self) -> None:
        self.dismiss("rewrite")

    @on(Button.Pressed, "#retry")
    def action_retry(self) -> None:
        self.dismiss("retry")

    @on(Input.Submitted)
    @on(Button.Pressed, "#update")
    def action_update_fact(self) -> None:
        if not self.updating:
            self.updating = True
            self._update(self.current, self.query_one("#contradiction-new-fact", Input).value)

    @work(group="contradiction-update", exit_on_error=False)
    async def _update(self, found: Contradiction, text: str) -> None:
        try:
            problem = await self.update(found, text)
        finally:
            self.updating = False
        if problem is None:
            self.dismiss("updated")
            return
        widget = self.query_one("#contradiction-problem", Static)
        widget.update(problem)
        widget.display = True


class ContinuityTools:
    """Mixed into `WritingScreen`: shows a new paragraph's contradictions; its key (^b) shows them again."""

    session: WritingSession
    keep_writing_progress: str

    def tell_contradictions(self, event: StepCompleted) -> None:
        """After a step: its contradictions open at once, or, while Keep writing runs, a notice."""
        if not event.contradictions:
            return
        if self.keep_writing_progress:
            key = key_for(self.app, type(self), "contradictions")  # type: ignore[attr-defined]
            self.notify(  # type: ignore[attr-defined]
                f"A paragraph may contradict the story bible; select it and press {key}.", title="Continuity",
            )
            return
        self.show_contradictions(event.step.id)

    def action_contradictions(self) -> None:
        """The selected paragraph's contradictions (the newest paragraph's, if none is selected)."""
        view = self.selected_paragraph()  # type: ignore[attr-defined]
        if view is None or not contradictions_of(self.session, view.step.id):
            self.notify("The continuity check found nothing against that paragraph.", title="Continuity")  # type: ignore[attr-defined]
            return
        self.show_contradictions(view.step.id)

    def show_contradictions(self, step_id: str) -> None:
        found = contradictions_of(self.session, step_id)
        try:
            number = paragraph_number(self.session, step_id)
        except LongyarnError:
            return

        async def update(contradiction: Contradiction, text: str) -> str | None:
            try:
                await update_contradicted_fact(self.session, step_id, contradiction, text)
            except Exception as error:  # the bible's one sentence, or the database's failure said as one
                return store_failure(error, "update the fact")
            return None

        def chosen(choice: Choice | None) -> None:
            is_head = self.session.branch and self.session.branch[-1].id == step_id
            if choice == "updated":
                self.notify("The fact is updated; undo takes it back.", title="Continuity")  # type: ignore[attr-defined]
            elif choice in ("rewrite", "retry") and not is_head:
                self.notify("Only the newest paragraph can be rewritten from here; go to it first.", title="Continuity")  # type: ignore[attr-defined]
            elif choice in ("rewrite", "retry"):
                self.run_worker(self._once_step_over(choice), group="contradiction-choice")  # type: ignore[attr-defined]

        self.app.push_screen(ContradictionsDialog(number, found, update), chosen)  # type: ignore[attr-defined]

    async def _once_step_over(self, choice: Choice) -> None:
        """The dialog opens as the paragraph lands, a moment before its step is over; rewriting
        or retrying waits for that moment."""
        while self.generating:  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)
        if choice == "rewrite":
            self.action_edit_paragraph()  # type: ignore[attr-defined]
        else:
            self.action_retry()  # type: ignore[attr-defined]
