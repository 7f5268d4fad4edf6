"""The writer's changes to a story besides writing: deleting and editing paragraphs, the outline,
the short-term memory, long-term memories' flags and the author's note; and undo and redo of
every change in the order made (see `history`).

`StoryEdits` is mixed into `WritingSession`, whose store, host, story, branch and position it
uses. Every change goes to the store in a thread and is recorded as it is made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.role_prompts import AuthorsNote
from longyarn.recurrent_core.types import MemoryEntry, Step, Story

from .counts import STORY_GOAL
from .history import Change, History

if TYPE_CHECKING:  # the session's own attributes, which this mixin uses
    from longyarn.recurrent_core.store import StoryStore

    from .engine_host import EngineHost


class MemoryEditNotStored(LongyarnError):
    """A step did not start because the writer's memory edit could not be stored first."""


class StoryEdits:
    """Every change a writer makes besides writing, each recorded in `history` as it is made."""

    store: StoryStore
    host: EngineHost
    story_id: str
    story: Story | None
    branch: list[Step]
    history: History

    # Provided by the session.
    position: Any
    reload: Callable[[], Awaitable[None]]
    memory_edit_stored: Callable[[], Awaitable[bool]]

    # ---- undo and redo ----

    def can_undo(self) -> bool:
        """Whether undo can do something: a change made here, else the newest paragraph."""
        return self.history.can_undo or self.position.head is not None

    def can_redo(self) -> bool:
        """Whether redo can do something: a change undone here, else a paragraph after the head
        (undone in an earlier session)."""
        return self.history.can_redo or bool(self.position.children)

    async def undo(self) -> str | None:
        """Undo the newest change made here (with none, step back from the newest paragraph, as
        earlier versions did); what was undone, e.g. "the deletion of paragraph 5"."""
        await self.memory_edit_stored()
        change = await self.history.undo()
        if change is None:
            change = self._back_a_paragraph()
            if change is None:
                return None
            await self.history.undo_outside(change)
        return change.description

    async def redo(self) -> str | None:
        """Redo the change undone last (with none, go on to the newest paragraph after the
        head); what was redone."""
        await self.memory_edit_stored()
        change = await self.history.redo()
        if change is None:
            change = self._on_a_paragraph()
            if change is None:
                return None
            await self.history.redo_outside(change)
        return change.description

    def _back_a_paragraph(self) -> Change | None:
        head = self.position.head
        if head is None:
            return None
        earlier = self.branch[-2].id if len(self.branch) >= 2 and self.branch[-1].id == head.id else head.parent_id
        return Change(
            f"paragraph {self._number(head.id)}",
            undo=lambda: self._set_head(earlier),
            redo=lambda: self._set_head(head.id),
        )

    def _on_a_paragraph(self) -> Change | None:
        children = self.position.children
        if not children:
            return None
        head = self.position.head.id if self.position.head else None
        after = children[-1].id
        return Change(
            f"paragraph {len(self.branch) + 1}",
            undo=lambda: self._set_head(head),
            redo=lambda: self._set_head(after),
        )

    async def _set_head(self, step_id: str | None) -> None:
        await asyncio.to_thread(self.store.set_head, self.story_id, step_id)
        await self.reload()

    def _number(self, step_id: str) -> int:
        """The paragraph's number in the branch as shown (1 for the first)."""
        return next((n for n, step in enumerate(self.branch, 1) if step.id == step_id), len(self.branch))

    # ---- paragraphs ----

    async def edit_paragraph(self, step_id: str, text: str) -> Step:
        """Store the writer's edit of a paragraph, re-embedding its memory."""
        before = next((step.paragraph for step in self.branch if step.id == step_id), None)
        if before is None:
            before = (await asyncio.to_thread(self.store.get_step, step_id)).paragraph
        updated = await self._store_paragraph(step_id, text)
        if updated.paragraph != before:

            async def to(paragraph: str) -> None:
                await self._store_paragraph(step_id, paragraph)
                await self.reload()

            self.history.record(Change(
                f"the edit of paragraph {self._number(step_id)}", undo=lambda: to(before), redo=lambda: to(updated.paragraph)
            ))
        return updated

    async def _store_paragraph(self, step_id: str, text: str) -> Step:
        why = "No model is ready to re-embed it; save it again once the model has loaded (F5: settings)."
        async with self.host.model(why) as engine:
            updated = await engine.edit_paragraph(step_id, text)
        self.branch = [updated if step.id == updated.id else step for step in self.branch]
        if self.position.head is not None and updated.id == self.position.head.id:
            self.position = replace(self.position, head=updated)
        return updated

    async def delete_paragraph(self, step: Step) -> bool:
        """Delete a paragraph (and its memory) in one transaction; when it was the newest,
        writing continues from the one before it, as after an undo. True if the head moved."""
        at_head = self.position.head is not None and step.id == self.position.head.id
        earlier = self.branch[-2].id if len(self.branch) >= 2 else None
        number = self._number(step.id)

        async def delete() -> None:
            await asyncio.to_thread(self.store.delete_paragraph, step.id, move_head=at_head, new_head=earlier)
            await self.reload()

        async def restore() -> None:
            await asyncio.to_thread(self.store.restore_paragraph, step.id, move_head=at_head)
            await self.reload()

        if at_head:
            await asyncio.to_thread(self.store.delete_paragraph, step.id, move_head=True, new_head=earlier)
            await self.reload()
        else:
            await asyncio.to_thread(self.store.delete_paragraph, step.id)
            self.branch = [s for s in self.branch if s.id != step.id]
        self.history.record(Change(f"the deletion of paragraph {number}", undo=restore, redo=delete))
        return at_head

    # ---- the story: outline, author's note ----

    async def save_outline(self, title: str, outline: str) -> Story:
        story = self.story or await asyncio.to_thread(self.store.get_story, self.story_id)
        before = (story.title, story.outline)
        self.story = await self._update_story(title=title, outline=outline)
        if (title, outline) != before:
            self.history.record(self._story_change("the outline edit", dict(zip(("title", "outline"), before)),
                                                   {"title": title, "outline": outline}))
        return self.story

    async def save_authors_note(self, text: str, depth: int) -> Story:
        """The story's author's note (style, tone, point of view, tense) and its depth in the
        writer's prompt (0: right before the task); an empty text removes it."""
        story = self.story or await asyncio.to_thread(self.store.get_story, self.story_id)
        before = dict(story.settings)
        after = dict(before)
        if text.strip():
            after["authors_note"] = {"text": text.strip(), "depth": max(0, int(depth))}
        else:
            after.pop("authors_note", None)
        self.story = await self._update_story(settings=after)
        if after != before:
            self.history.record(self._story_change("the author's note", {"settings": before}, {"settings": after}))
        return self.story

    async def save_word_goal(self, goal: int) -> Story:
        """The story's word goal (0: none), an undoable change."""
        story = self.story or await asyncio.to_thread(self.store.get_story, self.story_id)
        before = dict(story.settings)
        after = {**before, STORY_GOAL: max(0, int(goal))} if goal else {k: v for k, v in before.items() if k != STORY_GOAL}
        self.story = await self._update_story(settings=after)
        if after != before:
            self.history.record(self._story_change("the word goal", {"settings": before}, {"settings": after}))
        return self.story

    def authors_note(self) -> AuthorsNote:
        return AuthorsNote.of(self.story) if self.story is not None else AuthorsNote()

    async def _update_story(self, **fields: object) -> Story:
        return await asyncio.to_thread(self.store.update_story, self.story_id, **fields)

    def _story_change(self, description: str, before: dict, after: dict) -> Change:
        async def to(fields: dict) -> None:
            self.story = await self._update_story(**fields)

        return Change(description, undo=lambda: to(before), redo=lambda: to(after))

    # ---- memories ----

    def _memory_change(self, step: Step, before: str, after: str) -> Change:
        """The short-term memory edit of `step` (stored by the session), undoable."""

        async def to(text: str) -> None:
            await asyncio.to_thread(self.store.update_short_term_memory, step.id, text)
            await self.reload()

        return Change(
            f"the short-term memory edit of paragraph {self._number(step.id)}",
            undo=lambda: to(before),
            redo=lambda: to(after),
        )

    async def set_memory_flags(self, entry: MemoryEntry, **flags: bool) -> MemoryEntry:
        """Pin or exclude a long-term memory (an undoable change)."""
        updated = await asyncio.to_thread(self.store.set_memory_flags, entry.id, **flags)
        before = {"pinned": entry.pinned, "excluded": entry.excluded}
        after = {"pinned": updated.pinned, "excluded": updated.excluded}
        if before != after:
            what = "pinning" if after["pinned"] != before["pinned"] else "excluding"
            if not (after["pinned"] or after["excluded"]):
                what = "unpinning" if before["pinned"] else "including again"

            async def to(state: dict) -> None:
                await asyncio.to_thread(self.store.set_memory_flags, entry.id, **state)

            self.history.record(Change(f"{what} a long-term memory", undo=lambda: to(before), redo=lambda: to(after)))
        return updated
