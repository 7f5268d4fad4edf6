"""The first-run screen: which model longyarn will use, and where to change it."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class WelcomeScreen(ModalScreen[str]):
    """Dismisses with "settings" or "continue"."""

    BINDINGS = [Binding("escape", "continue", "Continue", id="welcome-continue")]

    def __init__(self, model_description: str, problem: str | None) -> None:
        super().__init__(id="welcome")
        self.model_description = model_description
        self.problem = problem

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Welcome to longyarn", classes="dialog-title")
            yield Static(
                "longyarn writes long fiction with you, one paragraph at a time: you choose or "
                "write each next instruction, and edit anything it remembers.",
                classes="dialog-text",
            )
            yield Static(self.model_description, id="welcome-model", classes="dialog-text", markup=False)
            if self.problem:
                yield from self._problem_lines(self.problem)
            with Horizontal(classes="buttons"):
                yield Button("Continue", id="continue")
                yield Button("Open settings", id="settings", variant="primary" if self.problem else "default")

    @staticmethod
    def _problem_lines(problem: str) -> list[Static]:
        return [
            Static(problem, id="welcome-problem", classes="problem", markup=False),
            Static(
                "You can still read, browse and export your stories. Open the settings to "
                "choose a model (F5 opens them at any time).",
                classes="dialog-text",
            ),
        ]

    def on_mount(self) -> None:
        self.query_one("#settings" if self.problem else "#continue").focus()

    def show_problem(self, problem: str) -> None:
        """The model turned out unusable while this screen was open (it loads in the background)."""
        if self.problem is None:
            self.query_one(".dialog").mount_all(self._problem_lines(problem), before=".buttons")
        else:
            self.query_one("#welcome-problem", Static).update(problem)
        self.problem = problem
        settings = self.query_one("#settings", Button)
        settings.variant = "primary"
        settings.focus()

    @on(Button.Pressed, "#settings")
    def _settings(self) -> None:
        self.dismiss("settings")

    @on(Button.Pressed, "#continue")
    def action_continue(self) -> None:
        self.dismiss("continue")
