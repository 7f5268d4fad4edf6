"""The writing screen: the story, the short-term memory, the next instructions, and the step.

The screen renders a `WritingSession`, which holds where the writer is and makes every change.
The step runs in a worker (`WritingSession.step` is an async generator); its events are rendered
as they come, so typing and scrolling never wait for the model. Escape cancels the worker; the
engine commits only at the very end, so a cancelled step leaves the story as it was. Keep
writing runs several steps in a row in one worker, each committed as it lands.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, Static, TextArea
from textual.worker import Worker

from longyarn.app.session.writing import NoModel, Position, WritingSession
from longyarn.app.session.long_notes import LongNotes
from longyarn.app.ui.formatting import paragraphs_label, store_failure
from longyarn.app.ui.step_events import StepRenderer
from longyarn.app.ui.widgets import InstructionList, ProseArea, StoryView
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import SentContext, StepCompleted, StepEvent, StepStarted, Story

from .bible_tools import BibleTools
from .contradictions import ContinuityTools
from .context import ContextScreen
from .cowriting import CoWritingEditor
from .chapters import CHAPTER_ACTIONS, ChapterActions
from .craft import CraftTools
from .dialogs import ConfirmDialog, OutlineDialog, OutlineEdit
from .help import KeysFooter
from .keep_writing import KeepWriting
from .memory import MemoryScreen
from .story_moves import StoryMoves
from ..notices import explain_no_model, export_story, tell_fallbacks

log = logging.getLogger(__name__)

# What Enter does with an empty instruction box (see `chosen_instruction`).
NEXT_PLACEHOLDER = "Enter: write from the highlighted instruction, or type your own"
OPENING_PLACEHOLDER = "Enter: write the opening paragraph, or type how it should open"

# Actions that change the story; none of them may start while a step is being written.
STORY_CHANGING_ACTIONS = frozenset(
    {
        "write_next", "keep_writing", "undo", "redo", "retry", "previous_branch", "next_branch",
        "edit_paragraph", "delete_paragraph", "edit_outline", "alternatives",
        *CHAPTER_ACTIONS,
    }
)


class WritingScreen(StoryMoves, KeepWriting, CraftTools, ChapterActions, BibleTools, ContinuityTools, Screen):
    """Write a story one paragraph at a time."""

    BINDINGS = [
        Binding("ctrl+g", "write_next", "Write", id="write", priority=True),
        # Not ctrl+k: the instruction box and the memory panel use it to delete to the line's end.
        Binding("ctrl+o", "keep_writing", "Keep writing", id="keep-writing",
                tooltip="Keep writing: several paragraphs one after another; Escape stops"),
        Binding("escape", "cancel_step", "Cancel step", id="cancel", priority=True),
        Binding("ctrl+z", "undo", "Undo", id="undo"),
        Binding("ctrl+y", "redo", "Redo", id="redo"),
        Binding("ctrl+r", "retry", "Retry", id="retry"),
        Binding("ctrl+n", "alternatives", "Versions", id="alternatives", show=False,
                tooltip="Versions at once: several versions of the next paragraph, side by side; pick one"),
        Binding("alt+left", "previous_branch", "◀ Version", id="branch-previous"),
        Binding("alt+right", "next_branch", "Version ▶", id="branch-next"),
        Binding("f2", "memories", "Memory", id="memories"),
        Binding("f3", "context", "Context", id="context"),
        Binding("f4", "edit_outline", "Outline", id="outline", show=False),
        # priority: the memory panel (a TextArea) would take F6 for itself.
        Binding("f6", "export", "Export", id="export", show=False, priority=True),
        Binding("f7", "authors_note", "Author's note", id="authors-note", show=False,
                tooltip="Author's note: style, tone, point of view, tense, at a depth of the prompt"),
        Binding("f8", "goals", "Goals", id="goals", show=False,
                tooltip="Goals: words for the story and for this session"),
        Binding("ctrl+l", "library", "Library", id="library"),
        Binding("f10", "bible", "Bible", id="bible", show=False,
                tooltip="Story bible: characters, places, objects, groups, lore and rules, with their facts"),
        Binding("f12", "bible_updates", "Bible updates", id="bible-updates", show=False,
                tooltip="Bible updates the model proposed: accept, edit or reject each"),
        Binding("ctrl+b", "contradictions", "Contradictions", id="contradictions", show=False,
                tooltip="Contradictions: the paragraph's sentences against the story bible's facts; rewrite, retry or update the fact"),
        Binding("ctrl+t", "end_chapter", "End chapter", id="end-chapter", show=False,
                tooltip="End the chapter here with its summary (typed, or the model's); the next paragraph begins a new one"),
    ]

    # The footer shows these after the others: at 80 columns they give way, and F1 lists them.
    FOOTER_LAST = ("keep_writing",)

    HELP_TITLE = "Keys for writing"
    # F1 cannot open over a dialog (it is modal), so the editor's keys are listed here.
    HELP_PARTS = (
        ("in the story", StoryView),
        ("in the instructions", InstructionList),
        ("in the paragraph editor", CoWritingEditor),
    )
    HELP_NOTES = (
        ("enter", "Write the next paragraph from your instruction; with none typed, from the "
                  "highlighted one of the three"),
        ("↑, ↓", "Highlight an instruction (in the instructions)"),
        ("enter", "Take the highlighted instruction into your instruction box to edit (in the instructions)"),
    )

    generating: reactive[bool] = reactive(False, init=False)
    moving: reactive[bool] = reactive(False, init=False)  # a history move or delete is being stored

    def __init__(self, session: WritingSession, *, write_first: bool = False) -> None:
        super().__init__(id="writing")
        self.session = session
        session.on_memory_edit_failed = self._memory_edit_failed
        self.story_id = session.story_id
        self.write_first = write_first
        self.last_started: StepStarted | None = None  # what the last step sent (while it runs)
        self.step_worker: Worker | None = None
        self.keep_writing_progress = ""  # "Keep writing: paragraph 2 of 5" while a run goes on

    @property
    def position(self) -> Position:
        return self.session.position

    @property
    def story(self) -> Story | None:
        return self.session.story

    # ---- layout ----

    def compose(self) -> ComposeResult:
        yield Static("", id="story-header", markup=False)
        with Horizontal(id="desk"):
            yield StoryView(id="story")
            with Vertical(id="side"):
                yield Label("Short-term memory", classes="panel-title")
                yield ProseArea(id="short-term-memory")
                yield Label("Next instructions", classes="panel-title")
                yield InstructionList(id="instructions")
        yield Input(
            placeholder=OPENING_PLACEHOLDER,
            id="instruction",
            select_on_focus=False,  # a chosen instruction is there to be edited, not replaced
        )
        with Horizontal(id="status-line"):
            yield Static("", id="status", markup=False)
            yield Static("", id="bible-updates", markup=False)
            yield Static("", id="counts", markup=False)
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
        await self.session.reload()
        await self._show_session()

    async def _show_session(self) -> None:
        """Show the story as the session holds it."""
        if not self.is_attached:  # the writer left while the story was loading
            return
        await self.story_view.show_branch(self.session.branch, headings=self.session.chapter_headings())
        self._show_position()

    def _show_position(self) -> None:
        head = self.position.head
        self.memory_editor.load_text(head.short_term_memory if head else "")
        # A step (or a Keep writing run) has read the short-term memory already: an edit now would be lost.
        self.memory_editor.read_only = head is None or self.generating
        instructions = self.query_one("#instructions", InstructionList)
        instructions.show_instructions(head.next_instructions if head else ())
        self.instruction_input.placeholder = NEXT_PLACEHOLDER if head else OPENING_PLACEHOLDER
        self._show_header()
        self.show_counts()
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
        parts += self.chapter_label()
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
        """Store the writer's edit of the short-term memory on the head step, if any (see
        `WritingSession.save_memory_edit`)."""
        if not self.is_mounted:
            return
        edited = self.session.save_memory_edit(self.memory_editor.text)
        if edited is not None:
            self.story_view.replace_step(edited)

    def _memory_edit_failed(self, error: Exception) -> None:
        head = self.position.head
        if head is not None and self.is_attached:
            self.story_view.replace_step(head)  # what the store holds; the panel keeps the words
        self.notify(
            store_failure(error, "save your edit of the short-term memory"),
            title="Your edit is still in the memory panel",
            severity="error",
            timeout=15,
        )

    async def keep_edits(self) -> bool:
        """Store the short-term memory edit still in its panel (quitting calls this)."""
        self.save_memory_edit()
        return await self.session.memory_edit_stored()

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
        if action in ("write_next", "keep_writing", "alternatives"):
            return self.session.host.engine is not None
        if action == "undo":
            return self.session.can_undo()
        if action == "redo":
            return self.session.can_redo()
        if action == "retry":
            return position.head is not None and self.session.host.engine is not None
        if action in ("previous_branch", "next_branch"):
            number, total = position.version
            return total > 1 and (number > 1 if action == "previous_branch" else number < total)
        if action == "end_chapter":
            return bool(self.session.branch)
        if action in ("edit_paragraph", "delete_paragraph", *CHAPTER_ACTIONS):
            return bool(self.story_view.steps)
        return True

    def watch_generating(self, generating: bool) -> None:
        self.set_class(generating, "-generating")
        self.refresh_bindings()

    def watch_moving(self) -> None:
        self.refresh_bindings()

    def _has_model(self) -> bool:
        if self.session.host.engine is None:
            explain_no_model(self, self.session.host)
            return False
        return True

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
        if not self._has_model() or self.generating or self.moving:
            return
        self.save_memory_edit()
        self.start_step(self.chosen_instruction(), "head")

    def action_retry(self) -> None:
        """Write the last paragraph again, as a new version beside it; the old one is kept."""
        again = self.session.retry_parent()
        if again is None or self.generating or self.moving or not self._has_model():
            return
        self.save_memory_edit()
        self.start_step(*again, retry=True)

    def start_step(self, instruction: str | None, parent: str | None | Literal["head"], *, retry: bool = False) -> None:
        self._begin_generating()
        self.step_worker = self.run_step(instruction, parent, retry)

    def _begin_generating(self) -> None:
        self.generating = True
        # The step has read the short-term memory already; an edit now would be lost.
        self.memory_editor.read_only = True

    @work(exclusive=True, group="step", exit_on_error=False)
    async def run_step(self, instruction: str | None, parent: str | None | Literal["head"], retry: bool) -> None:
        try:
            completed = await self._write_paragraph(self.session.step(instruction, parent))
        except asyncio.CancelledError:
            if self.is_attached:  # not when the screen itself is closing
                if self.session.landed_on_cancel:
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

    async def _write_paragraph(self, events) -> bool:  # noqa: ANN001 - an async iterator of events
        """Show one paragraph's events, streamed, and the paragraph once stored: True then. A
        model error or a failure is told in a notice (False). On a cancel the screen shows what
        the store holds, and CancelledError goes on."""
        completed = False
        try:
            async for event in events:
                await self.show_event(event)
                completed = completed or isinstance(event, StepCompleted)
        except asyncio.CancelledError:
            if self.is_attached:
                self.story_view.streaming.end()
                if self.session.landed_on_cancel:
                    await self._show_session()  # the session read it back already
            raise
        except NoModel:
            explain_no_model(self, self.session.host)
            self._show_status("The step did not run; the story is as it was.")
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

    async def show_event(self, event: StepEvent) -> None:
        """Render one event of the step as it arrives."""
        if isinstance(event, StepStarted):
            self.last_started = event
        if isinstance(event, StepCompleted):
            await self._step_landed(event)
            return
        progress = f"{self.keep_writing_progress} · " if self.keep_writing_progress else ""
        audience = "run" if progress else "writer"
        StepRenderer(self.story_view, self._show_status, audience, progress).show(event)

    async def _step_landed(self, event: StepCompleted) -> None:
        step = event.step
        self.story_view.streaming.end()
        if self.session.replaced_step_id is not None:
            # A retry: the new version replaces the old one on screen; the old one is kept.
            await self.story_view.remove_step(self.session.replaced_step_id)
        self.story_view.headings = self.session.chapter_headings()
        await self.story_view.append_step(step)
        if self.instruction_input.value.strip() == step.instruction:
            # Used up; words typed meanwhile (say, to take over from Keep writing) stay.
            self.instruction_input.value = ""
        self._show_position()
        tell_fallbacks(self, self.session.host, event.fallbacks)
        self.tell_chapter_end(event)
        self.tell_contradictions(event)
        self._tell_session_goal(step)
        self._show_status(f"Saved. {paragraphs_label(len(self.story_view.steps))}.")

    def _tell_session_goal(self, step) -> None:  # noqa: ANN001 - the Step just written
        counts = self.session.word_counts()
        if counts.session_goal and counts.session >= counts.session_goal > counts.session - len(step.paragraph.split()):
            self.notify(f"Session goal reached: {counts.session:,} words.", title="Goal")

    def action_cancel_step(self) -> None:
        if self.step_worker is not None and self.step_worker.is_running:
            self.step_worker.cancel()

    # ---- other screens ----

    def action_memories(self) -> None:
        """Memories, opened on what a paragraph recalled: the selected one, else the one being
        written, else the newest."""
        selected = self.story_view.selected
        started = self.last_started
        steps = self.story_view.steps
        branch = [s.id for s in steps]
        store, host = self.session.store, self.session.host
        if selected is None and self.generating and started is not None:
            self.app.push_screen(MemoryScreen(
                store, host, self.story_id, paragraph="The paragraph being written",
                recalled=started.recalled, branch=branch, set_flags=self.session.set_memory_flags,
            ))
            return
        step = selected.step if selected is not None else (steps[-1] if steps else None)
        if step is None:
            self.app.push_screen(MemoryScreen(store, host, self.story_id, set_flags=self.session.set_memory_flags))
            return
        number = next((i for i, s in enumerate(steps, 1) if s.id == step.id), len(steps))
        self.app.push_screen(MemoryScreen(
            store, host, self.story_id, paragraph=f"Paragraph {number:,}", step_id=step.id, branch=branch,
            set_flags=self.session.set_memory_flags,
        ))

    def action_context(self) -> None:
        """What the model was given: for the selected paragraph, else the one being written,
        else the newest."""
        selected = self.story_view.selected
        started = self.last_started
        store = self.session.store
        if selected is None and self.generating and started is not None:
            sent = SentContext(
                started.instruction, started.context, started.recalled, template=started.template,
                budget_tokens=started.budget_tokens, prompt_tokens=started.prompt_tokens, bible=started.bible,
            )
            self.app.push_screen(ContextScreen(store, "Context of the paragraph being written", sent=sent))
            return
        steps = self.story_view.steps
        step = selected.step if selected is not None else (steps[-1] if steps else None)
        if step is None:
            self.app.push_screen(ContextScreen(store, "Context"))
            return
        number = next((i for i, s in enumerate(steps, 1) if s.id == step.id), len(steps))
        self.app.push_screen(ContextScreen(store, f"Context of paragraph {number:,}", step_id=step.id))

    def action_edit_outline(self) -> None:
        story = self.story
        if story is None:
            return

        def save(edit: OutlineEdit | None) -> None:
            if edit is not None:
                self.save_outline(edit)

        self.app.push_screen(OutlineDialog(story.title, story.outline, notes=LongNotes(self.session.host, story.id)), save)

    @work(group="outline", exit_on_error=False)
    async def save_outline(self, edit: OutlineEdit) -> None:
        try:
            await self.session.save_outline(edit.title, edit.outline)
        except Exception as error:
            self.notify(store_failure(error, "save the outline"), title="The outline is as it was",
                        severity="error", timeout=12)
            return
        self._show_header()
        self.refresh_bindings()
        self._show_status("Saved the outline; the next paragraph is written with it.")

    def action_export(self) -> None:
        export_story(self, self.session.store, self.story_id)

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
