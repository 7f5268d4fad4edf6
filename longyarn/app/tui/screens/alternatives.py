"""Versions of the next paragraph at once ("swipes"): written side by side from one prompt, one
picked; the others are kept as versions beside it (alt+←/→ on the writing screen).

The versions stream in as they are written; nothing is stored until one is picked, and Escape
leaves with the story as it was. See `longyarn.recurrent_core.alternatives`.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static
from textual.worker import Worker

from longyarn.app.session.writing import WritingSession
from longyarn.app.ui.formatting import one_line
from longyarn.recurrent_core.alternatives import MOST_ALTERNATIVES, AlternativeDelta, Drafts
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import Step

from .help import KeysFooter

DEFAULT_COUNT = 3


class AlternativesScreen(Screen[tuple[Step, tuple[str, ...]] | None]):
    """N versions side by side. Dismisses with (the chosen step, its fallbacks), or None."""

    BINDINGS = [
        Binding("escape", "leave", "Back", id="versions-back",
                tooltip="Back to the story; nothing is stored until a version is picked"),
        Binding("left", "highlight(-1)", "◀", id="versions-left", show=False),
        Binding("right", "highlight(1)", "▶", id="versions-right", show=False),
        Binding("enter", "pick", "Pick", id="versions-pick"),
        Binding("r", "again", "Write again", id="versions-again"),
        Binding("plus,=", "more", "More", id="versions-more", tooltip="One version more, written again"),
        Binding("minus", "fewer", "Fewer", id="versions-fewer", tooltip="One version fewer, written again"),
        *[Binding(str(n), f"pick({n - 1})", show=False) for n in range(1, MOST_ALTERNATIVES + 1)],
    ]
    HELP_TITLE = "Keys for versions at once"
    HELP_NOTES = (("1 to 6", "Pick that version"),)

    def __init__(self, session: WritingSession, instruction: str | None, count: int = DEFAULT_COUNT) -> None:
        super().__init__(id="alternatives")
        self.session = session
        self.instruction = instruction
        self.count = count
        self.drafts: Drafts | None = None
        self.highlighted = 0
        self.worker: Worker | None = None
        self.keeping = False

    def compose(self) -> ComposeResult:
        direction = one_line(self.instruction, 80) if self.instruction else "the opening"
        yield Static(f"Versions of the next paragraph · {direction}", classes="screen-title", markup=False)
        yield Horizontal(id="versions")
        yield Static("", id="versions-status", markup=False)
        yield KeysFooter()

    async def on_mount(self) -> None:
        await self._draft()

    async def _draft(self) -> None:
        self.drafts = None
        self.highlighted = 0
        row = self.query_one("#versions", Horizontal)
        await row.remove_children()
        await row.mount_all(
            VerticalScroll(Label(f"{n + 1}", classes="version-number"), Static("", classes="version-text", markup=False),
                           classes="version", id=f"version-{n}")
            for n in range(self.count)
        )
        self._status(f"Writing {self.count} versions at once… (Escape leaves; nothing is stored)")
        self.refresh_bindings()
        self.worker = self.write_versions()

    @work(exclusive=True, group="versions", exit_on_error=False)
    async def write_versions(self) -> None:
        try:
            async for item in self.session.draft_alternatives(self.instruction, self.count):
                if isinstance(item, AlternativeDelta):
                    self._text(item.index).update(item.delta.snapshot)
                else:
                    self._show_drafts(item)
        except LongyarnError as error:
            self.notify(str(error), title="No versions were written", severity="error", timeout=15)
            self._status("No versions were written; the story is as it was. r tries again; Escape leaves.")

    def _text(self, index: int) -> Static:
        return self.query_one(f"#version-{index} .version-text", Static)

    def _show_drafts(self, drafts: Drafts) -> None:
        self.drafts = drafts
        for index in range(self.count):
            text = drafts.paragraphs[index] if index < len(drafts.paragraphs) else "(the model wrote nothing here)"
            self._text(index).update(text)
        dropped = f" The model left {drafts.dropped} empty." if drafts.dropped else ""
        self._status(
            f"Pick one: 1 to {len(drafts.paragraphs)}, or ←/→ and Enter; the others are kept as versions.{dropped}"
        )
        self._highlight(0)
        self.refresh_bindings()

    def _status(self, text: str) -> None:
        self.query_one("#versions-status", Static).update(text)

    def _highlight(self, index: int) -> None:
        self.highlighted = index
        for n, pane in enumerate(self.query(".version")):
            pane.set_class(n == index, "-highlighted")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        ready = self.drafts is not None and not self.keeping
        if action in ("pick", "highlight"):
            return ready
        if action in ("again", "more", "fewer"):
            if self.keeping:
                return False
            if action == "more":
                return self.count < MOST_ALTERNATIVES
            if action == "fewer":
                return self.count > 2
        return True

    def action_highlight(self, offset: int) -> None:
        if self.drafts is not None:
            self._highlight(max(0, min(len(self.drafts.paragraphs) - 1, self.highlighted + offset)))

    async def action_again(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        await self._draft()

    async def action_more(self) -> None:
        self.count = min(MOST_ALTERNATIVES, self.count + 1)
        await self.action_again()

    async def action_fewer(self) -> None:
        self.count = max(2, self.count - 1)
        await self.action_again()

    def action_leave(self) -> None:
        if self.worker is not None and self.worker.is_running:
            self.worker.cancel()
        if not self.keeping:
            self.dismiss(None)

    def action_pick(self, index: int | None = None) -> None:
        drafts = self.drafts
        chosen = self.highlighted if index is None else index
        if drafts is None or self.keeping or not 0 <= chosen < len(drafts.paragraphs):
            return
        self.keeping = True
        self._highlight(chosen)
        self._status(f"Saving version {chosen + 1} and keeping the others beside it…")
        self.refresh_bindings()
        self.keep(drafts, chosen)

    @work(group="versions-keep", exit_on_error=False)
    async def keep(self, drafts: Drafts, chosen: int) -> None:
        try:
            kept = await self.session.keep_alternative(drafts, chosen)
        except LongyarnError as error:
            self.notify(str(error), title="Nothing was stored", severity="error", timeout=15)
        except Exception as error:  # a locked database, say: the versions stay on screen
            self.notify(f"The versions could not be stored ({type(error).__name__}: {error}); nothing was "
                        "stored; pick again.", title="Nothing was stored", severity="error", timeout=15)
        else:
            self.dismiss(kept)
            return
        self.keeping = False
        self.refresh_bindings()
