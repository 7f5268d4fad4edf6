"""The context viewer: exactly what the model was given for a paragraph, section by section.

Any paragraph of the story can be shown, after a restart too: each step stores a compact record
of its prompt (see `longyarn.recurrent_core.context`), read here in a thread. The paragraph being written
is shown from the step's own event.
"""

from __future__ import annotations

import asyncio

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from longyarn.app.ui.formatting import one_line, store_failure
from longyarn.recurrent_core.context import STORY_BIBLE, load_sent_context
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import ActivatedEntry, SentContext

from .help import KeysFooter

# The first version that stores each step's context (database revision 0004).
CONTEXT_RECORDED_SINCE = "0.2.0"
# Shared with the memory browser, so it names no screen; one line in a 100-column terminal.
NOT_RECORDED = (
    f"Not recorded for paragraphs written before longyarn {CONTEXT_RECORDED_SINCE}; "
    "paragraphs written since show it here."
)


class ContextScreen(Screen):
    """Each section of the writer's prompt with its tokens and what was trimmed to fit."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="context-back")]

    def __init__(
        self, store: StoryStore, title: str, *, step_id: str | None = None, sent: SentContext | None = None
    ) -> None:
        """Show `sent` as it is, or load what was stored for `step_id`; neither: an empty story."""
        super().__init__(id="context-viewer")
        self.store = store
        self.title_text = title
        self.step_id = step_id
        self.sent = sent

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, classes="screen-title", markup=False)
        with VerticalScroll(id="sections"):
            if self.sent is not None:
                yield from self._sections(self.sent)
            elif self.step_id is None:
                yield Static(
                    "This story has no paragraphs yet. Write one, then come back here to see "
                    "exactly what the model was given.",
                    classes="hint",
                )
            else:
                yield Static("Reading what the model was given…", id="context-loading", classes="hint")
        yield KeysFooter()

    def on_mount(self) -> None:
        if self.sent is None and self.step_id is not None:
            self.load(self.step_id)

    @work(exclusive=True, group="context", exit_on_error=False)
    async def load(self, step_id: str) -> None:
        try:
            sent = await asyncio.to_thread(load_sent_context, self.store, step_id)
        except Exception as error:
            notice = store_failure(error, "read what the model was given for this paragraph")
            await self._show(Static(notice, classes="problem", markup=False))
            return
        if sent is None:
            await self._show(Static(NOT_RECORDED, id="context-not-recorded", classes="hint", markup=False))
            return
        self.sent = sent
        await self._show(*self._sections(sent))

    async def _show(self, *widgets: Static) -> None:
        if not self.is_attached:
            return
        container = self.query_one("#sections", VerticalScroll)
        await container.remove_children()
        await container.mount_all(widgets)

    def _sections(self, sent: SentContext) -> list[Static]:
        widgets: list[Static] = [
            Static(context_summary(sent), id="context-summary", markup=False),
            Static(template_line(sent.template), id="context-template", classes="hint", markup=False),
        ]
        if sent.trimmed_elsewhere:
            widgets.append(Static(trimmed_elsewhere_line(sent), id="context-trimmed-elsewhere", markup=False))
        widgets += [
            Label("Instruction", classes="section-title"),
            Static(sent.instruction, classes="section-text", markup=False),
        ]
        if sent.recalled:
            widgets.append(
                Label("Recalled memories · cosine score · ★ pinned", classes="recall-title", markup=False)
            )
            widgets.extend(
                Static(
                    f"{memory.score:5.2f} {'★' if memory.pinned else ' '} {one_line(memory.text, 200)}",
                    classes="recalled-memory",
                    markup=False,
                )
                for memory in sent.recalled
            )
        if sent.bible is not None and sent.bible.entries:
            widgets.append(
                Label("Story bible entries · why each came in · ✗ left out", classes="recall-title", markup=False)
            )
            widgets.extend(
                Static(
                    activation_line(entry, sent.bible.budget_tokens),
                    classes="bible-entry" + (" -trimmed" if entry.trimmed else ""),
                    markup=False,
                )
                for entry in sent.bible.entries
            )
        for section in sent.sections:
            title = f"{section.name} · {section.tokens:,} tokens"
            if section.trimmed_chars:
                title += f" · trimmed {section.trimmed_chars:,} characters"
            if section.name == STORY_BIBLE and sent.bible is not None:
                left_out = len(sent.bible.entries) - len(sent.bible.sent)
                if left_out:
                    title += f" · {left_out} of {len(sent.bible.entries)} entries left out"
            if section.name in sent.edited_since:
                title += " · edited since: shown as it reads now"
            classes = "section-title" + (" -trimmed" if section.trimmed_chars else "")
            widgets.append(Label(title, classes=classes, markup=False))
            widgets.append(Static(section.text or "(empty)", classes="section-text", markup=False))
        return widgets


ROLE_NAMES = {"memory": "memory keeper", "planner": "planner", "writer": "writer"}


def context_summary(sent: SentContext) -> str:
    """The context's size, the budget it was fitted to, and how much was trimmed to fit."""
    total = sum(section.tokens for section in sent.sections)
    trimmed = sum(section.trimmed_chars for section in sent.sections)
    summary = f"{total:,} tokens of context"
    if sent.budget_tokens:
        summary += f"; the whole prompt took {sent.prompt_tokens:,} of the {sent.budget_tokens:,}-token budget"
    if trimmed:
        return summary + f"; {trimmed:,} characters were trimmed to fit."
    return summary + "; nothing was trimmed."


def activation_line(entry: ActivatedEntry, budget_tokens: int) -> str:
    """One activated bible entry: whether it went in, what it is, and why it came in."""
    if entry.reason == "always":
        why = "always"
    elif entry.reason == "named":
        why = f"named “{entry.word}” in {entry.where}"
    elif entry.reason == "meaning":
        why = f"close in meaning to the instruction (score {entry.score:.2f})"
    else:
        why = f"mentioned as “{entry.word}” by {entry.where}"
    if entry.secondary_key:
        why += f", with “{entry.secondary_key}”"
    line = f"{'✗' if entry.trimmed else '✓'} {entry.name} ({entry.kind}) · {why} · {entry.tokens:,} tokens"
    if entry.trimmed:
        line += f" · left out: over the {entry.trimmed}"
    elif entry.cut_to_chars:
        line += f" · cut to fit: alone it is longer than the {budget_tokens:,}-token bible budget"
    return line


def template_line(template: str) -> str:
    if template:
        return f"Written with your own writer template: {template}"
    return "Written with longyarn's writer template (longyarn prompts diff shows yours, if any)."


def trimmed_elsewhere_line(sent: SentContext) -> str:
    """What the step's other requests lost to the budget, e.g. the planner's outline."""
    parts = [
        f"the {ROLE_NAMES.get(role, role)}'s {name.lower()} by {chars:,} characters"
        for role, name, chars in sent.trimmed_elsewhere
    ]
    return "To fit the budget, the step also trimmed " + "; ".join(parts) + "."
