"""The writing screen: the story, the short-term memory, the next instructions, and the step.

The step runs in a worker (`Engine.step` is an async generator); its events are rendered as
they come, so typing and scrolling never wait for the model. Escape cancels the worker; the
engine commits only at the very end, so a cancelled step leaves the story as it was. Keep
writing runs several steps in a row in one worker, each committed as it lands.

Every write to the store (a short-term memory edit, undo, redo, a version switch, a delete)
runs in a thread too: `longyarn batch` may hold the database's write lock for seconds, and the
writer must be able to keep typing meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import Worker

from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import (
    ParagraphDelta,
    PhaseChanged,
    SentContext,
    Step,
    StepCompleted,
    StepEvent,
    StepStarted,
    Story,
)

from ...choosing import next_instruction
from ..formatting import paragraphs_label, store_failure
from ..widgets import InstructionList, ParagraphView, StoryView
from .context import ContextScreen
from .dialogs import ConfirmDialog, KeepWritingDialog, OutlineDialog, OutlineEdit, ParagraphEditor
from .help import KeysFooter
from .memory import MemoryScreen

if TYPE_CHECKING:
    from longyarn.recurrent_core.engine import Engine

    from ..app import LongyarnApp

log = logging.getLogger(__name__)

PHASE_WORDS = {
    "writing": "Writing the paragraph…",
    "remembering": "Updating the short-term memory and planning what comes next…",
    "planning": "Planning what comes next…",
    "committing": "Saving…",
}
# The same, shorter, after "Keep writing: paragraph 2 of 5 · " (the status line is one line).
RUN_PHASE_WORDS = {
    "writing": "writing…",
    "remembering": "remembering and planning…",
    "planning": "planning…",
    "committing": "saving…",
}

# What Enter does with an empty instruction box (see `chosen_instruction`).
NEXT_PLACEHOLDER = "Enter: write from the highlighted instruction, or type your own"
OPENING_PLACEHOLDER = "Enter: write the opening paragraph, or type how it should open"

# Actions that change the story; none of them may start while a step is being written.
STORY_CHANGING_ACTIONS = frozenset(
    {
        "write_next", "keep_writing", "undo", "redo", "retry", "previous_branch", "next_branch",
        "edit_paragraph", "delete_paragraph", "edit_outline",
    }
)


@dataclass(frozen=True)
class Position:
    """Where the head is in the tree: what undo, redo, retry and branch switching can do."""

    head: Step | None
    siblings: tuple[Step, ...]  # the head and its alternatives, oldest first
    children: tuple[Step, ...]  # steps written after the head (redo targets), oldest first

    @property
    def version(self) -> tuple[int, int]:
        """(1-based index of the head among its siblings, how many there are)."""
        if self.head is None:
            return (0, 0)
        ids = [s.id for s in self.siblings]
        return (ids.index(self.head.id) + 1 if self.head.id in ids else 1, max(1, len(ids)))


class WritingScreen(Screen):
    """Write a story one paragraph at a time."""

    app: "LongyarnApp"

    BINDINGS = [
        Binding("ctrl+g", "write_next", "Write", id="write", priority=True),
        # Not ctrl+k: the instruction box and the memory panel use it to delete to the line's end.
        Binding("ctrl+o", "keep_writing", "Keep writing", id="keep-writing",
                tooltip="Keep writing: several paragraphs one after another; Escape stops"),
        Binding("escape", "cancel_step", "Cancel step", id="cancel", priority=True),
        Binding("ctrl+z", "undo", "Undo", id="undo"),
        Binding("ctrl+y", "redo", "Redo", id="redo"),
        Binding("ctrl+r", "retry", "Retry", id="retry"),
        Binding("alt+left", "previous_branch", "◀ Version", id="branch-previous"),
        Binding("alt+right", "next_branch", "Version ▶", id="branch-next"),
        Binding("f2", "memories", "Memory", id="memories"),
        Binding("f3", "context", "Context", id="context"),
        Binding("f4", "edit_outline", "Outline", id="outline", show=False),
        # priority: the memory panel (a TextArea) would take F6 for itself.
        Binding("f6", "export", "Export", id="export", show=False, priority=True),
        Binding("ctrl+l", "library", "Library", id="library"),
    ]

    # The footer shows these after the others: at 80 columns they give way, and F1 lists them.
    FOOTER_LAST = ("keep_writing",)

    HELP_TITLE = "Keys for writing"
    # F1 cannot open over a dialog (it is modal), so the editor's keys are listed here.
    HELP_PARTS = (
        ("in the story", StoryView),
        ("in the instructions", InstructionList),
        ("in the paragraph editor", ParagraphEditor),
    )
    HELP_NOTES = (
        ("enter", "Write the next paragraph from your instruction; with none typed, from the "
                  "highlighted one of the three"),
        ("↑, ↓", "Highlight an instruction (in the instructions)"),
        ("enter", "Take the highlighted instruction into your instruction box to edit (in the instructions)"),
    )

    generating: reactive[bool] = reactive(False, init=False)
    moving: reactive[bool] = reactive(False, init=False)  # a history move or delete is being stored

    def __init__(self, story_id: str, *, write_first: bool = False) -> None:
        super().__init__(id="writing")
        self.story_id = story_id
        self.write_first = write_first
        self.story: Story | None = None
        self.position = Position(None, (), ())
        self.last_started: StepStarted | None = None  # what the last step sent (while it runs)
        self.step_worker: Worker | None = None
        # The latest write of a short-term memory edit (True once stored); see save_memory_edit.
        self._memory_write: asyncio.Task[bool] | None = None
        self._undone: list[str] = []  # steps undone, newest last: what redo brings back
        self.keep_writing_progress = ""  # "Keep writing: paragraph 2 of 5" while a run goes on
        self._cancel_landed = False  # whether the step cancelled last had been stored already

    # ---- layout ----

    def compose(self) -> ComposeResult:
        yield Static("", id="story-header", markup=False)
        with Horizontal(id="desk"):
            yield StoryView(id="story")
            with Vertical(id="side"):
                yield Label("Short-term memory", classes="panel-title")
                yield TextArea(id="short-term-memory", soft_wrap=True)
                yield Label("Next instructions", classes="panel-title")
                yield InstructionList(id="instructions")
        yield Input(
            placeholder=OPENING_PLACEHOLDER,
            id="instruction",
            select_on_focus=False,  # a chosen instruction is there to be edited, not replaced
        )
        yield Static("", id="status", markup=False)
        yield KeysFooter()

    @property
    def story_view(self) -> StoryView:
        return self.query_one("#story", StoryView)

    @property
    def memory_editor(self) -> TextArea:
        return self.query_one("#short-term-memory", TextArea)

    @property
    def instruction_input(self) -> Input:
        return self.query_one("#instruction", Input)

    async def on_mount(self) -> None:
        await self.reload()
        self.instruction_input.focus()
        if self.write_first and self.position.head is None:
            self.action_write_next()

    async def on_unmount(self) -> None:
        if self.step_worker is not None and self.step_worker.is_running:
            self.step_worker.cancel()

    def on_descendant_blur(self, event) -> None:
        if event.widget is self.memory_editor:
            self.save_memory_edit()

    def on_screen_suspend(self) -> None:
        # Leaving for a dialog or another screen keeps the writer's memory edit.
        self.save_memory_edit()

    # ---- state ----

    async def reload(self) -> None:
        """Read the story and the branch at its head from the store, and show them."""
        store = self.app.store

        def read() -> tuple[Story, list[Step]]:
            return store.get_story(self.story_id), store.branch(self.story_id)

        self.story, branch = await asyncio.to_thread(read)
        if not self.is_attached:  # the writer left while the story was loading
            return
        await self.story_view.show_branch(branch)
        await self._load_position(branch[-1] if branch else None)

    def _read_position(self, head: Step | None) -> Position:
        """Where `head` sits among the author's steps (readers' branches are not offered)."""
        store = self.app.store
        if head is None:
            return Position(None, (), tuple(store.children(self.story_id, None)))
        return Position(
            head,
            tuple(store.children(self.story_id, head.parent_id)),
            tuple(store.children(self.story_id, head.id)),
        )

    async def _load_position(self, head: Step | None) -> None:
        self.position = await asyncio.to_thread(self._read_position, head)
        self.memory_editor.load_text(head.short_term_memory if head else "")
        # A step (or a Keep writing run) has read the short-term memory already: an edit now would be lost.
        self.memory_editor.read_only = head is None or self.generating
        instructions = self.query_one("#instructions", InstructionList)
        instructions.show_instructions(head.next_instructions if head else ())
        self.instruction_input.placeholder = NEXT_PLACEHOLDER if head else OPENING_PLACEHOLDER
        self._show_header()
        self._show_status("Saved." if head else "")
        self.refresh_bindings()

    def _show_header(self) -> None:
        story = self.story
        if story is None:
            return
        count = len(self.story_view.steps)
        parts = [story.title]
        if story.genre:
            parts.append(story.genre)
        parts.append(paragraphs_label(count))
        number, total = self.position.version
        if total > 1:
            parts.append(f"version {number} of {total} (alt+←/→)")
        self.query_one("#story-header", Static).update(" · ".join(parts))

    def _show_status(self, text: str) -> None:
        status = self.query_one("#status", Static)
        if not text and self.position.head is None:
            text = (
                "An empty story: press Enter to write the opening paragraph, "
                "or type how it should open."
            )
        status.update(text)

    def save_memory_edit(self) -> None:
        """Store the writer's edit of the short-term memory on the head step, if any.

        The next step reads the head's short-term memory, so this is how an edit takes effect.
        The write runs in a thread; `memory_edit_stored()` waits for it, and every step and
        history move waits for that before it starts.
        """
        head = self.position.head
        if head is None or not self.is_mounted:
            return
        text = self.memory_editor.text.strip()
        if text == head.short_term_memory.strip():
            return
        # The screen holds the edit at once, so saving again before the write lands is a no-op.
        edited = replace(head, short_term_memory=text)
        self.position = Position(edited, self.position.siblings, self.position.children)
        self.story_view.replace_step(edited)
        self._memory_write = asyncio.create_task(self._write_memory_edit(self._memory_write, head, text))

    async def _write_memory_edit(self, earlier: asyncio.Task[bool] | None, stored: Step, text: str) -> bool:
        if earlier is not None:
            await asyncio.shield(earlier)  # edits land in the order they were made
        try:
            await asyncio.to_thread(self.app.store.update_short_term_memory, stored.id, text)
        except Exception as error:  # e.g. the database stayed locked: say so, keep the words
            head = self.position.head
            if head is not None and head.id == stored.id:
                # Back to what the store holds, so the next save (or step) writes the edit again.
                self.position = Position(stored, self.position.siblings, self.position.children)
                if self.is_attached:
                    self.story_view.replace_step(stored)
            self.app.notify(
                store_failure(error, "save your edit of the short-term memory"),
                title="Your edit is still in the memory panel",
                severity="error",
                timeout=15,
            )
            return False
        return True

    async def keep_edits(self) -> bool:
        """Store the short-term memory edit still in its panel (quitting calls this)."""
        self.save_memory_edit()
        return await self.memory_edit_stored()

    async def memory_edit_stored(self) -> bool:
        """Wait until the writer's short-term memory edits are stored; False if the last failed."""
        if self._memory_write is None:
            return True
        # Shielded: cancelling a step must not cancel the write it was waiting for.
        return await asyncio.shield(self._memory_write)

    # ---- what can be done now ----

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_step":
            return self.generating
        available = self._can_run(action)
        if available and action in STORY_CHANGING_ACTIONS and (self.generating or self.moving):
            return None  # shown greyed out: it will come back when the step or move is done
        return available

    def _can_run(self, action: str) -> bool:
        """Whether `action` makes sense now, a step or move aside (else it leaves the footer)."""
        position = self.position
        if action in ("write_next", "keep_writing"):
            return self.app.engine is not None
        if action == "undo":
            return position.head is not None
        if action == "redo":
            return bool(position.children)
        if action == "retry":
            return position.head is not None and self.app.engine is not None
        if action in ("previous_branch", "next_branch"):
            number, total = position.version
            return total > 1 and (number > 1 if action == "previous_branch" else number < total)
        if action in ("edit_paragraph", "delete_paragraph"):
            return bool(self.story_view.steps)
        return True

    def watch_generating(self, generating: bool) -> None:
        self.set_class(generating, "-generating")
        self.refresh_bindings()

    def watch_moving(self) -> None:
        self.refresh_bindings()

    # ---- the step ----

    @on(Input.Submitted, "#instruction")
    def _instruction_submitted(self) -> None:
        if self.generating:
            self.notify("A paragraph is being written; wait for it, or press Escape to cancel it.")
            return
        self.action_write_next()

    @on(InstructionList.OptionSelected)
    def _instruction_chosen(self, event: InstructionList.OptionSelected) -> None:
        head = self.position.head
        if head is None:
            return
        self.instruction_input.value = head.next_instructions[event.option_index]
        self.instruction_input.focus()
        self.instruction_input.cursor_position = len(self.instruction_input.value)

    def chosen_instruction(self) -> str | None:
        """The writer's own or edited instruction; else the highlighted candidate; else the
        engine's opening instruction (None) for an empty story."""
        typed = self.instruction_input.value.strip()
        if typed:
            return typed
        head = self.position.head
        if head is None:
            return None
        highlighted = self.query_one("#instructions", InstructionList).highlighted or 0
        return head.next_instructions[highlighted]

    def action_write_next(self) -> None:
        if self.app.engine is None:
            self.app.explain_no_model()
            return
        if self.generating or self.moving:
            return
        self.save_memory_edit()
        self.start_step(self.chosen_instruction(), "head")

    def action_retry(self) -> None:
        """Write the last paragraph again, as a new version beside it; the old one is kept."""
        head = self.position.head
        if head is None or self.generating or self.moving:
            return
        if self.app.engine is None:
            self.app.explain_no_model()
            return
        self.save_memory_edit()
        self.start_step(head.instruction, head.parent_id, retry=True)

    def start_step(self, instruction: str | None, parent: str | None | Literal["head"], *, retry: bool = False) -> None:
        self.generating = True
        # The step has read the short-term memory already; an edit now would be lost.
        self.memory_editor.read_only = True
        self.step_worker = self.run_step(instruction, parent, retry)

    @work(exclusive=True, group="step", exit_on_error=False)
    async def run_step(self, instruction: str | None, parent: str | None | Literal["head"], retry: bool) -> None:
        try:
            completed = await self._write_paragraph(instruction, parent)
        except asyncio.CancelledError:
            if self.is_attached:  # not when the screen itself is closing
                if self._cancel_landed:
                    self.notify("The paragraph had already been saved when the step was cancelled.")
                else:
                    self.notify("Cancelled; nothing was stored.", timeout=4)
                    self._show_status("Cancelled; the story is as it was.")
            raise
        finally:
            self._step_over()
        if completed and retry:
            self.notify("The new version is beside the old one: alt+←/→ switches between them.")

    def _step_over(self) -> None:
        if self.is_attached:
            self.story_view.streaming.end()
        self.generating = False
        self.keep_writing_progress = ""
        if self.is_attached:
            self.memory_editor.read_only = self.position.head is None

    async def _write_paragraph(self, instruction: str | None, parent: str | None | Literal["head"]) -> bool:
        """Write one paragraph, streamed, and show it once stored: True then. A model error or a
        failure is told in a notice (False). On a cancel the screen shows what the store holds
        (`_cancel_landed` says whether the paragraph had been stored) and CancelledError goes on."""
        head_before = self.position.head.id if self.position.head else None
        completed = committing = False
        engine = None
        self._cancel_landed = False
        try:
            # Held to the end: settings saved meanwhile apply from the next step.
            async with self.app.engine_in_use() as engine:
                if engine is None:  # replaced by a model that is still loading
                    self.app.explain_no_model()
                    self._show_status("The step did not run; the story is as it was.")
                    return False
                if not await self.memory_edit_stored():
                    self._show_status(
                        "The step did not run: your memory edit is not saved yet; the story is as it was."
                    )
                    return False
                async for event in engine.step(self.story_id, instruction, parent_step_id=parent):
                    await self.show_event(event)
                    completed = completed or isinstance(event, StepCompleted)
                    committing = committing or (isinstance(event, PhaseChanged) and event.phase == "committing")
        except asyncio.CancelledError:
            if self.is_attached:
                self._cancel_landed = await self._after_cancel(head_before, engine if committing else None)
            raise
        except LongyarnError as error:
            self.notify(str(error), title="No paragraph was written", severity="error", timeout=15)
            self._show_status("The step did not run; the story is as it was.")
        except Exception as error:  # a bug must not leave the screen stuck mid-step
            log.exception("step failed")
            self.notify(
                f"Something unexpected went wrong ({type(error).__name__}: {error}); nothing was "
                "stored; try again, and report this if it repeats.",
                title="No paragraph was written",
                severity="error",
                timeout=15,
            )
            self._show_status("The step did not run; the story is as it was.")
        finally:
            if self.is_attached:
                self.story_view.streaming.end()
        return completed

    # ---- keep writing: several steps in a row, each committed as it lands ----

    def action_keep_writing(self) -> None:
        if self.app.engine is None:
            self.app.explain_no_model()
            return
        if self.generating or self.moving:
            return
        # What Enter would write now comes first, so the writer's typed or picked instruction is used.
        first = self.chosen_instruction()

        def start(count: int | None) -> None:
            if count and not (self.generating or self.moving):
                self.save_memory_edit()
                self.generating = True
                self.memory_editor.read_only = True
                self.step_worker = self.keep_writing(first, count)

        self.app.push_screen(KeepWritingDialog(first), start)

    @work(exclusive=True, group="step", exit_on_error=False)
    async def keep_writing(self, first: str | None, count: int) -> None:
        """Write `count` paragraphs in a row: the first from `first`, each after it from the
        instruction batch's default policy chooses. Each is a step of its own, stored as it
        lands, so undo takes them back one at a time and a stop or an error keeps them."""
        written = 0
        in_progress = False  # a paragraph is being written (not between two)
        try:
            for number in range(1, count + 1):
                self.keep_writing_progress = f"Keep writing: paragraph {number} of {count}"
                self._show_status(self.keep_writing_progress)
                instruction = first if number == 1 else await self._next_instruction()
                if number > 1 and instruction is None:
                    break  # no model: the notice says why
                in_progress = True
                if not await self._write_paragraph(instruction, "head"):
                    break  # the notice says why
                in_progress = False
                written += 1
        except asyncio.CancelledError:
            if self.is_attached:
                written += int(self._cancel_landed)
                dropped = "; the one in progress was not kept" if in_progress and not self._cancel_landed else ""
                self._say_kept_writing(f"Keep writing stopped: {written} of {count} written and saved{dropped}.")
            raise
        finally:
            self._step_over()
        if written == count:
            self._say_kept_writing(f"Kept writing: {paragraphs_label(written)} written and saved.")
        elif self.is_attached:
            self._show_status(f"Keep writing stopped: {written} of {count} written and saved; see the notice.")

    async def _next_instruction(self) -> str | None:
        """The instruction batch's default policy takes after the head; None if there is no
        model to ask (after settings were saved, this waits for their model to load)."""
        while self.app.model_loading:
            self._show_status(f"{self.keep_writing_progress} · waiting for the new model to load…")
            await asyncio.sleep(0.1)
        async with self.app.engine_in_use() as engine:
            if engine is None:
                self.app.explain_no_model()
                return None
            instruction, fallback = await next_instruction(
                engine, self.story_id, self.position.head, len(self.story_view.steps)
            )
        if fallback:
            self.notify(fallback, severity="warning", timeout=8)
        return instruction

    def _say_kept_writing(self, text: str) -> None:
        if self.is_attached:
            self.notify(text, timeout=8)
            self._show_status(text)

    async def show_event(self, event: StepEvent) -> None:
        """Render one event of the step as it arrives."""
        progress = f"{self.keep_writing_progress} · " if self.keep_writing_progress else ""
        if isinstance(event, ParagraphDelta):
            self.story_view.streaming.append(event.delta)
        elif isinstance(event, StepStarted):
            self.last_started = event
            self.story_view.streaming.begin()
            self.story_view.follow_end()
            if progress:
                self._show_status(f"{progress}writing…  (Escape stops)")
            else:
                self._show_status("Writing the paragraph… (Escape cancels; nothing is saved until the step ends)")
        elif isinstance(event, PhaseChanged):
            if event.phase == "writing":
                # The engine starts the paragraph over after a cut stream: drop the broken start.
                self.story_view.streaming.begin()
            if progress:
                self._show_status(f"{progress}{RUN_PHASE_WORDS.get(event.phase, event.phase)}  (Escape stops)")
            else:
                self._show_status(PHASE_WORDS.get(event.phase, event.phase) + "  (Escape cancels)")
        elif isinstance(event, StepCompleted):
            await self._step_landed(event)

    async def _step_landed(self, event: StepCompleted) -> None:
        step = event.step
        self.story_view.streaming.end()
        if self.position.head is not None and step.parent_id == self.position.head.parent_id:
            # A retry: the new version replaces the old one on screen; the old one is kept.
            await self.story_view.remove_step(self.position.head.id)
        await self.story_view.append_step(step)
        self.story = await asyncio.to_thread(self.app.store.get_story, self.story_id)
        if self.instruction_input.value.strip() == step.instruction:
            # Used up; words typed meanwhile (say, to take over from Keep writing) stay.
            self.instruction_input.value = ""
        await self._load_position(step)
        self.app.tell_fallbacks(event.fallbacks)
        self._show_status(f"Saved. {paragraphs_label(len(self.story_view.steps))}.")

    async def _after_cancel(self, head_before: str | None, committing_engine: Engine | None) -> bool:
        """Show the story as the store holds it after a cancel; True if the paragraph had been
        stored already. `committing_engine`: the engine whose step was saving when cancelled."""
        self.story_view.streaming.end()
        if committing_engine is not None:
            # A commit, once started, always finishes (the engine shields it): wait for it,
            # however long the database makes it wait for its lock.
            self._show_status("Saving the paragraph that was already written…")
            await committing_engine.wait_for_commit(self.story_id)
        story = await asyncio.to_thread(self.app.store.get_story, self.story_id)
        if story.head_step_id != head_before:
            await self.reload()
            return True
        return False

    def action_cancel_step(self) -> None:
        if self.step_worker is not None and self.step_worker.is_running:
            self.step_worker.cancel()

    # ---- history: every move is a move of the head; nothing is ever deleted ----

    def move_head(self, step_id: str | None, done: str = "") -> None:
        """Move where writing continues to `step_id`, then show the branch there and `done`.

        The memory edit is stored first (it belongs to the step it was made on). The story's
        actions wait, greyed out, until the move is stored and shown.
        """
        if self.moving or self.generating:
            return
        self.moving = True
        self.save_memory_edit()
        self._store_move(step_id, done)

    @work(group="history", exit_on_error=False)
    async def _store_move(self, step_id: str | None, done: str) -> None:
        try:
            if not await self.memory_edit_stored():
                return  # the notice says why; the writer's words stay on this paragraph
            await asyncio.to_thread(self.app.store.set_head, self.story_id, step_id)
            await self.reload()
        except Exception as error:
            self.notify(store_failure(error, "move to that paragraph"), title="The story is as it was",
                        severity="error", timeout=12)
        else:
            if done:
                self._show_status(done)
        finally:
            self.moving = False

    def action_undo(self) -> None:
        head = self.position.head
        if head is None:
            return
        steps = self.story_view.steps
        target = steps[-2].id if len(steps) >= 2 and steps[-1].id == head.id else head.parent_id
        self._undone.append(head.id)
        self.move_head(target, "Undone; the paragraph is kept: Ctrl+Y brings it back.")

    def action_redo(self) -> None:
        """Bring back the paragraph last undone here (not merely the newest version)."""
        children = {child.id for child in self.position.children}
        if not children:
            return
        target = next((step for step in reversed(self._undone) if step in children), None)
        if target is None:
            target = self.position.children[-1].id
        else:
            self._undone.remove(target)
        self.move_head(target)

    def action_previous_branch(self) -> None:
        self._switch_version(-1)

    def action_next_branch(self) -> None:
        self._switch_version(+1)

    def _switch_version(self, offset: int) -> None:
        number, total = self.position.version
        index = number - 1 + offset
        if 0 <= index < total:
            self.move_head(self.position.siblings[index].id, f"Version {index + 1} of {total}.")

    # ---- paragraphs ----

    def selected_paragraph(self) -> ParagraphView | None:
        """The paragraph selected in the story, else the newest one."""
        selected = self.story_view.selected
        if selected is not None:
            return selected
        views = self.story_view.paragraph_views
        return views[-1] if views else None

    def action_edit_paragraph(self) -> None:
        view = self.selected_paragraph()
        if view is None or self.generating:
            return
        if self.app.engine is None:
            self.app.explain_no_model()
            return
        step_id = view.step.id

        async def store_edit(text: str) -> bool:
            return await self.store_paragraph_edit(step_id, text)

        self.app.push_screen(ParagraphEditor(view.step.paragraph, store_edit))

    async def store_paragraph_edit(self, step_id: str, text: str) -> bool:
        """Store the writer's edit of a paragraph, re-embedding its memory; False, having said
        why, if it could not be (the editor then keeps the words)."""
        try:
            async with self.app.engine_in_use() as engine:
                if engine is None:  # replaced by a model that is still loading
                    self.app.notify(
                        "No model is ready to re-embed it; save it again once the model has loaded (F5: settings).",
                        title="Your edit is still in the editor",
                        severity="warning",
                        timeout=12,
                    )
                    return False
                updated = await engine.edit_paragraph(step_id, text)
        except Exception as error:  # e.g. the database stayed locked: say so, keep the words
            problem = str(error) if isinstance(error, LongyarnError) else store_failure(error, "save the paragraph")
            self.app.notify(problem, title="Your edit is still in the editor", severity="error", timeout=15)
            return False
        if self.is_attached:
            self.story_view.replace_step(updated)
            if self.position.head is not None and updated.id == self.position.head.id:
                self.position = Position(updated, self.position.siblings, self.position.children)
            self._show_status("Saved the edit; its long-term memory was updated too.")
        return True

    def action_delete_paragraph(self) -> None:
        view = self.selected_paragraph()
        if view is None or self.generating or self.moving:
            return
        step = view.step

        def delete(confirmed: bool | None) -> None:
            if confirmed and not (self.generating or self.moving):
                self.moving = True
                self.delete_paragraph(step)

        self.app.push_screen(
            ConfirmDialog(
                "Delete this paragraph? It leaves the story and is no longer recalled as a "
                "memory; the paragraphs after it stay."
            ),
            delete,
        )

    @work(group="history", exit_on_error=False)
    async def delete_paragraph(self, step: Step) -> None:
        """Delete the paragraph (and its memory) in a thread; writing continues from the one
        before it when it was the newest, as after an undo."""
        store = self.app.store
        at_head = self.position.head is not None and step.id == self.position.head.id
        steps = self.story_view.steps
        earlier = steps[-2].id if len(steps) >= 2 else None

        def delete() -> None:
            store.delete_paragraph(step.id)
            if at_head:
                store.set_head(self.story_id, earlier)

        try:
            await asyncio.to_thread(delete)
            if at_head:
                await self.reload()
            else:
                await self.story_view.remove_step(step.id)
                self._show_header()
        except Exception as error:
            self.notify(store_failure(error, "delete the paragraph"), title="The paragraph is still there",
                        severity="error", timeout=12)
            return
        finally:
            self.moving = False
        self._show_status("Deleted the paragraph; it is no longer recalled.")

    # ---- other screens ----

    def action_memories(self) -> None:
        """Memories, opened on what a paragraph recalled: the selected one, else the one being
        written, else the newest."""
        selected = self.story_view.selected
        started = self.last_started
        steps = self.story_view.steps
        branch = [s.id for s in steps]
        if selected is None and self.generating and started is not None:
            self.app.push_screen(MemoryScreen(
                self.story_id, paragraph="The paragraph being written", recalled=started.recalled, branch=branch
            ))
            return
        step = selected.step if selected is not None else (steps[-1] if steps else None)
        if step is None:
            self.app.push_screen(MemoryScreen(self.story_id))
            return
        number = next((i for i, s in enumerate(steps, 1) if s.id == step.id), len(steps))
        self.app.push_screen(
            MemoryScreen(self.story_id, paragraph=f"Paragraph {number:,}", step_id=step.id, branch=branch)
        )

    def action_context(self) -> None:
        """What the model was given: for the selected paragraph, else the one being written,
        else the newest."""
        selected = self.story_view.selected
        started = self.last_started
        if selected is None and self.generating and started is not None:
            sent = SentContext(started.instruction, started.context, started.recalled)
            self.app.push_screen(ContextScreen("Context of the paragraph being written", sent=sent))
            return
        steps = self.story_view.steps
        step = selected.step if selected is not None else (steps[-1] if steps else None)
        if step is None:
            self.app.push_screen(ContextScreen("Context"))
            return
        number = next((i for i, s in enumerate(steps, 1) if s.id == step.id), len(steps))
        self.app.push_screen(ContextScreen(f"Context of paragraph {number:,}", step_id=step.id))

    def action_edit_outline(self) -> None:
        story = self.story
        if story is None:
            return

        def save(edit: OutlineEdit | None) -> None:
            if edit is not None:
                self.save_outline(edit)

        self.app.push_screen(OutlineDialog(story.title, story.outline), save)

    @work(group="outline", exit_on_error=False)
    async def save_outline(self, edit: OutlineEdit) -> None:
        try:
            self.story = await asyncio.to_thread(
                self.app.store.update_story, self.story_id, title=edit.title, outline=edit.outline
            )
        except Exception as error:
            self.notify(store_failure(error, "save the outline"), title="The outline is as it was",
                        severity="error", timeout=12)
            return
        self._show_header()
        self._show_status("Saved the outline; the next paragraph is written with it.")

    def action_export(self) -> None:
        self.app.export_story(self.story_id)

    def action_library(self) -> None:
        if self.generating:
            def leave(confirmed: bool | None) -> None:
                if confirmed:
                    self.action_cancel_step()
                    self.app.pop_screen()

            self.app.push_screen(
                ConfirmDialog("A paragraph is being written. Cancel it and go to the library?", "Cancel it"),
                leave,
            )
            return
        self.save_memory_edit()
        self.app.pop_screen()
