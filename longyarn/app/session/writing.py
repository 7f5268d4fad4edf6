"""One writer at one story: where they are in its tree, and every change they make to it.

`WritingSession` holds no UI: the writers' screen renders what it says, and `longyarn batch`
drives its `keep_writing` with no one at the keyboard.

The story is a tree of steps, and the head is where writing continues. Undo, redo, retry and
versions are moves of the head; a step is never deleted by them. Every change goes to the store
in a thread: `longyarn batch` may hold the database's write lock for seconds, and the writer
must be able to keep typing meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Literal

from longyarn.recurrent_core.alternatives import AlternativeDelta, Drafts, keep_alternatives, stream_alternatives
from longyarn.recurrent_core.chapter_memory import ChapterPlace
from longyarn.recurrent_core.cowriting import PassageChange, PassageTask, propose_change
from longyarn.recurrent_core.engine import Engine
from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Contradiction, PhaseChanged, Step, StepCompleted, StepEvent, Story

from .bible import StoryBible
from .bible_learning import queue_updates
from .chapters import ChapterEdits
from .choosing import DEFAULT_CHOICE, Choose, next_instruction
from .counts import WordCounts, count_words, story_goal
from .edits import MemoryEditNotStored, StoryEdits
from .engine_host import EngineHost, NoModel
from .history import Change, History

Parent = str | None | Literal["head"]


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


@dataclass(frozen=True)
class RunProgress:
    """Keep writing is at paragraph `number` of `count` (sent before its step), or waits for a
    model that is loading before it can choose the paragraph's instruction."""

    number: int
    count: int
    waiting_for_model: bool = False


@dataclass(frozen=True)
class RunInstruction:
    """Keep writing chose the next instruction; `fallback` says why, if it was not the model's."""

    instruction: str | None
    fallback: str | None


class WritingSession(ChapterEdits, StoryEdits):
    """A writer's way through one story: the head, its neighbours, and what they can do next."""

    def __init__(
        self,
        store: StoryStore,
        host: EngineHost,
        story_id: str,
        *,
        on_memory_edit_failed: Callable[[Exception], None] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """`on_memory_edit_failed` hears why a short-term memory edit could not be stored (the
        session then holds what the store holds, so the next save writes the edit again).
        `now` is the clock (for the words written today)."""
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.store = store
        self.host = host
        self.story_id = story_id
        self.on_memory_edit_failed = on_memory_edit_failed
        self.story: Story | None = None
        self.branch: list[Step] = []  # the steps from the first to the head
        self.chapters: list[ChapterPlace] = []  # the branch's chapters (see ChapterEdits)
        self.position = Position(None, (), ())
        self.landed_on_cancel = False  # whether the step cancelled last had been stored already
        self.replaced_step_id: str | None = None  # the version a retry just put aside, if any
        self.history = History()  # every change made here, for undo and redo (see StoryEdits)
        # The story bible: its changes are steps of the same history; batch (no settings) auto-accepts.
        self.bible = StoryBible(
            store, story_id, self.history, self._bible_where,
            auto_accept=host.settings.bible_auto_accept if host.settings is not None else True,
        )
        self.written_here: set[str] = set()  # steps written since the story was opened
        # What the continuity checks found, by the step written here (see session.continuity).
        self.contradictions: dict[str, tuple[Contradiction, ...]] = {}
        self.session_goal = 0  # words the writer means to write in this session (0: none)
        # The latest write of a short-term memory edit (True once stored); see save_memory_edit.
        self._memory_write: asyncio.Task[bool] | None = None

    # ---- reading the story ----

    def _bible_where(self) -> tuple[str | None, int]:
        """(the head step's id, paragraphs on the branch): where the bible's facts are read."""
        head = self.position.head
        return (head.id if head is not None else None), len(self.branch)

    async def reload(self) -> None:
        """Read the story, the branch at its head, and the head's neighbours from the store."""

        def read() -> tuple[Story, list[Step], Position]:
            story, branch = self.store.get_story(self.story_id), self.store.branch(self.story_id)
            return story, branch, self._read_position(branch[-1] if branch else None)

        self.story, self.branch, self.position = await asyncio.to_thread(read)
        await self.refresh_chapters()
        await self.bible.load_queue()

    async def refresh_position(self, head: Step | None) -> None:
        """Read `head`'s neighbours again (the head itself is as given)."""
        self.position = await asyncio.to_thread(self._read_position, head)

    async def refresh_story(self) -> Story:
        self.story = await asyncio.to_thread(self.store.get_story, self.story_id)
        return self.story

    def _read_position(self, head: Step | None) -> Position:
        """Where `head` sits among the author's steps (readers' branches are not offered)."""
        if head is None:
            return Position(None, (), tuple(self.store.children(self.story_id, None)))
        return Position(
            head,
            tuple(self.store.children(self.story_id, head.parent_id)),
            tuple(self.store.children(self.story_id, head.id)),
        )

    # ---- the short-term memory ----

    def save_memory_edit(self, text: str) -> Step | None:
        """Store the writer's edit of the head's short-term memory, in a thread; the head as
        edited, or None if there was nothing to store.

        The next step reads the head's short-term memory, so this is how an edit takes effect.
        The session holds the edit at once, so saving again before the write lands is a no-op;
        `memory_edit_stored()` waits for the write, and every step and move waits for that.
        """
        head = self.position.head
        text = text.strip()
        if head is None or text == head.short_term_memory.strip():
            return None
        edited = replace(head, short_term_memory=text)
        self.position = replace(self.position, head=edited)
        self.branch = [edited if step.id == edited.id else step for step in self.branch]
        self._memory_write = asyncio.create_task(self._write_memory_edit(self._memory_write, head, text))
        self.history.record(self._memory_change(head, head.short_term_memory, text))
        return edited

    async def _write_memory_edit(self, earlier: asyncio.Task[bool] | None, stored: Step, text: str) -> bool:
        if earlier is not None:
            await asyncio.shield(earlier)  # edits land in the order they were made
        try:
            await asyncio.to_thread(self.store.update_short_term_memory, stored.id, text)
        except Exception as error:
            head = self.position.head
            if head is not None and head.id == stored.id:
                # Back to what the store holds, so the next save (or step) writes the edit again.
                self.position = replace(self.position, head=stored)
                self.branch = [stored if step.id == stored.id else step for step in self.branch]
            if self.on_memory_edit_failed is not None:
                self.on_memory_edit_failed(error)
            return False
        return True

    async def memory_edit_stored(self) -> bool:
        """Wait until the writer's short-term memory edits are stored; False if the last failed."""
        if self._memory_write is None:
            return True
        # Shielded: cancelling a step must not cancel the write it was waiting for.
        return await asyncio.shield(self._memory_write)

    # ---- writing ----

    async def step(self, instruction: str | None, parent: Parent = "head") -> AsyncIterator[StepEvent]:
        """Write one paragraph after `parent` ("head": where writing continues), streamed.

        Raises `NoModel` if no model is ready, `MemoryEditNotStored` if the writer's memory edit
        could not be stored first, and the engine's `LongyarnError`s. On a cancel while the
        paragraph was being saved, the commit finishes (the engine shields it) before
        CancelledError goes on; `landed_on_cancel` then says whether it was stored.
        """
        self.landed_on_cancel = False
        head_before = self.position.head.id if self.position.head else None
        committing = False
        # Held to the end: settings saved meanwhile apply from the next step.
        async with self.host.model() as engine:
            if not await self.memory_edit_stored():
                raise MemoryEditNotStored(
                    "The step did not run: your memory edit is not saved yet; the story is as it was."
                )
            try:
                async for event in engine.step(self.story_id, instruction, parent_step_id=parent):
                    committing = committing or (isinstance(event, PhaseChanged) and event.phase == "committing")
                    if isinstance(event, StepCompleted):
                        await self._landed(event.step)
                        # The writers' queue (auto-accepted when the setting says so; batch: always).
                        await self.bible.propose(queue_updates(event.bible_updates, event.step))
                        if event.contradictions:
                            self.contradictions[event.step.id] = event.contradictions
                    yield event
            except asyncio.CancelledError:
                self.landed_on_cancel = await self._settle_cancel(head_before, engine if committing else None)
                raise

    async def _landed(self, step: Step, described: str = "the new paragraph") -> None:
        head = self.position.head
        self.replaced_step_id = None
        if head is not None and step.parent_id == head.parent_id:  # a retry: the old one is kept aside
            self.replaced_step_id = head.id
            self.branch = [s for s in self.branch if s.id != head.id]
            described = "the new version"
        self.branch.append(step)
        self.written_here.add(step.id)
        await self.start_chapter_after_ended(step)
        before = head.id if head is not None else None
        self.history.record(Change(described, undo=lambda: self._set_head(before), redo=lambda: self._set_head(step.id)))
        await self.refresh_story()
        await self.refresh_position(step)

    async def _settle_cancel(self, head_before: str | None, committing_engine: Engine | None) -> bool:
        """After a cancel: wait for a commit already under way, then read the story as the store
        holds it; True if the paragraph had been stored."""
        try:
            if committing_engine is not None:
                # A commit, once started, always finishes: wait for it, however long the
                # database makes it wait for its lock.
                await committing_engine.wait_for_commit(self.story_id)
            story = await asyncio.to_thread(self.store.get_story, self.story_id)
            if story.head_step_id != head_before:
                await self.reload()
                return True
        except LongyarnError:  # the story cannot be read now; the next reload shows it
            pass
        return False

    def word_counts(self) -> WordCounts:
        """The story's words, today's and this session's, with their goals."""
        return count_words(
            self.branch, self.written_here, self.now(), story_goal=story_goal(self.story), session_goal=self.session_goal
        )

    # ---- alternatives and co-writing ----

    async def draft_alternatives(self, instruction: str | None, count: int) -> AsyncIterator[AlternativeDelta | Drafts]:
        """`count` versions of the next paragraph at once: their pieces as they come, then the
        drafts to choose from (`keep_alternative`); nothing is stored meanwhile."""
        async with self.host.model() as engine:
            if not await self.memory_edit_stored():
                raise MemoryEditNotStored(
                    "The versions were not written: your memory edit is not saved yet; the story is as it was."
                )
            async for item in stream_alternatives(engine, self.story_id, instruction, count):
                yield item

    async def keep_alternative(self, drafts: Drafts, chosen: int) -> tuple[Step, tuple[str, ...]]:
        """Store every version, the head on `chosen` (one undoable change); the chosen step and
        its fallbacks. The chosen version's bible updates join the queue; the others' are kept
        for when the writer turns to their version."""
        async with self.host.model() as engine:
            kept = await keep_alternatives(engine, drafts, chosen)
        await self._landed(kept.chosen, f"version {chosen + 1} of {len(kept.steps)} written at once")
        for step, remembered in zip(kept.steps, kept.remembered):
            if remembered.contradictions:
                self.contradictions[step.id] = remembered.contradictions
            updates = queue_updates(remembered.bible, step)
            if step.id == kept.chosen.id:
                await self.bible.propose(updates)
            else:
                await self.bible.keep_for_later(updates)
        return kept.chosen, kept.fallbacks

    async def propose_change(
        self, step_id: str, text: str, start: int, end: int, task: PassageTask, wish: str = ""
    ) -> PassageChange:
        """The model's rewrite (expansion, description, shortening) of `text[start:end]`, or its
        continuation at `end`; `text` is the paragraph as the writer is editing it. Nothing is
        stored: an accepted change is stored as a paragraph edit."""
        async with self.host.model() as engine:
            step = next((s for s in self.branch if s.id == step_id), None)
            if step is None:
                step = await asyncio.to_thread(self.store.get_step, step_id)
            return await propose_change(engine, step, text, start, end, task, wish)

    def retry_parent(self) -> tuple[str, str | None] | None:
        """(instruction, parent) to write the head again as a new version beside it."""
        head = self.position.head
        return None if head is None else (head.instruction, head.parent_id)

    async def next_instruction(self, how: Choose = DEFAULT_CHOICE, seed: int = 0) -> RunInstruction:
        """The instruction chosen after the head when no one picks (batch, keep writing); a
        model that is loading (new settings) is waited for."""
        while self.host.loading:
            await asyncio.sleep(0.1)
        async with self.host.model() as engine:
            instruction, fallback = await next_instruction(
                engine, self.story_id, self.position.head, len(self.branch), how, seed
            )
        return RunInstruction(instruction, fallback)

    async def keep_writing(
        self,
        first: str | None,
        count: int,
        *,
        choose_first: bool = False,
        how: Choose = DEFAULT_CHOICE,
        seed: int = 0,
    ) -> AsyncIterator[StepEvent | RunProgress | RunInstruction]:
        """Write `count` paragraphs in a row: the first from `first` (or, with `choose_first`,
        as the later ones), each after it from the instruction `how` chooses. Each is a step of
        its own, stored as it lands, so undo takes them back one at a time and a stop or an
        error keeps them. Yields `RunProgress` before each paragraph, a `RunInstruction` once
        one was chosen, then the step's events.
        """
        for number in range(1, count + 1):
            yield RunProgress(number, count)
            if number == 1 and not choose_first:
                instruction = first
            else:
                if self.host.loading:
                    yield RunProgress(number, count, waiting_for_model=True)
                chosen = await self.next_instruction(how, seed)
                yield chosen
                instruction = chosen.instruction
            async for event in self.step(instruction):
                yield event

    # ---- moving the head: every move is a move; nothing is ever deleted ----

    async def move_head(self, step_id: str | None, description: str = "the move") -> None:
        """Continue writing from `step_id` (an undoable change), once the writer's memory edit
        is stored (it belongs to the step it was made on)."""
        if not await self.memory_edit_stored():
            raise MemoryEditNotStored("Your memory edit is not saved yet; the story is as it was.")
        before = self.position.head.id if self.position.head else None
        await self._set_head(step_id)
        self.history.record(Change(description, undo=lambda: self._set_head(before), redo=lambda: self._set_head(step_id)))

    def version_target(self, offset: int) -> tuple[str, int, int] | None:
        """(step id, its number, how many) of the version `offset` away from the head's."""
        number, total = self.position.version
        index = number - 1 + offset
        if 0 <= index < total:
            return self.position.siblings[index].id, index + 1, total
        return None
