"""The context viewer: exactly what the last step sent to the model, section by section."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from recurrent_core.types import StepStarted


class ContextScreen(Screen):
    """Each section of the writer's prompt with its tokens and what was trimmed to fit."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="context-back")]

    def __init__(self, started: StepStarted | None) -> None:
        super().__init__(id="context-viewer")
        self.started = started

    def compose(self) -> ComposeResult:
        yield Static("Context of the last step", classes="screen-title")
        with VerticalScroll(id="sections"):
            if self.started is None:
                yield Static(
                    "No step has run since this story was opened. Write a paragraph, then come "
                    "back here to see exactly what the model was given.",
                    classes="hint",
                )
            else:
                yield from self._sections(self.started)
        yield Footer(compact=True)

    def _sections(self, started: StepStarted) -> ComposeResult:
        total = sum(section.tokens for section in started.context)
        trimmed = sum(section.trimmed_chars for section in started.context)
        summary = f"{total:,} tokens of context"
        summary += f"; {trimmed:,} characters were trimmed to fit the budget." if trimmed else "; nothing was trimmed."
        yield Static(summary, id="context-summary", markup=False)
        yield Label("Instruction", classes="section-title")
        yield Static(started.instruction, classes="section-text", markup=False)
        for section in started.context:
            title = f"{section.name} · {section.tokens:,} tokens"
            if section.trimmed_chars:
                title += f" · trimmed {section.trimmed_chars:,} characters"
            yield Label(title, classes="section-title" + (" -trimmed" if section.trimmed_chars else ""), markup=False)
            yield Static(section.text or "(empty)", classes="section-text", markup=False)
