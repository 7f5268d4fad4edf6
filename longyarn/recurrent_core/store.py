"""The persistence interface the engine talks to.

`longyarn.storage.stories.SqlStories` implements it with SQLAlchemy; the engine never imports storage.
Methods are synchronous and thread-safe; the engine calls them through `asyncio.to_thread`.
Every method that changes data does so in one transaction, or not at all.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .types import MemoryEntry, NewStep, Step, StepContext, Story


class StoryStore(Protocol):
    # ---- stories ----
    def create_story(
        self,
        *,
        title: str,
        premise: str,
        genre: str,
        outline: str,
        settings: dict | None = None,
        readable: bool = False,
        reader_may_extend: bool = False,
    ) -> Story: ...

    def get_story(self, story_id: str) -> Story:
        """Raises `StoryNotFound` with a one-sentence message."""

    def list_stories(self) -> list[Story]:
        """Most recently edited first."""

    def update_story(self, story_id: str, **fields: object) -> Story:
        """Change title, premise, genre, outline, settings, readable or reader_may_extend."""

    def delete_story(self, story_id: str) -> None: ...

    # ---- steps: a tree per story; the story's head is where writing continues ----
    def get_step(self, step_id: str) -> Step: ...

    def branch(self, story_id: str, head_step_id: str | None = None) -> list[Step]:
        """Steps from the root to `head_step_id` (default: the story's head), oldest first.

        Deleted paragraphs are left out.
        """

    def branch_step_ids(self, story_id: str, head_step_id: str | None = None) -> list[str]:
        """The ids of `branch()`'s steps, oldest first, without their text."""

    def children(self, story_id: str, parent_id: str | None) -> list[Step]:
        """Direct children of a step (roots when `parent_id` is None), oldest first."""

    def set_head(self, story_id: str, step_id: str | None) -> Story: ...

    def count_steps(self, story_id: str, head_step_id: str | None = None) -> int:
        """How many paragraphs the branch ending at the head holds."""

    def paragraph_counts(self, story_ids: list[str] | None = None) -> dict[str, int]:
        """`count_steps` of many stories (default: all) at their heads, in one query.

        Unknown ids are left out of the answer.
        """

    def commit_step(
        self,
        new_step: NewStep,
        *,
        embedding: np.ndarray,
        embedding_model: str,
        move_head: bool = True,
    ) -> Step:
        """Insert the step, its long-term memory and its context (if `new_step.context`), and
        move the head, in one transaction."""

    def edit_paragraph(
        self, step_id: str, paragraph: str, *, embedding: np.ndarray, embedding_model: str
    ) -> Step:
        """Replace a paragraph and its memory's text and embedding together."""

    def delete_paragraph(self, step_id: str, *, move_head: bool = False, new_head: str | None = None) -> None:
        """Hide a paragraph from the story and remove its memory from recall; the tree is kept.

        With `move_head`, writing continues from `new_head` (None: the story's start), in the
        same transaction.
        """

    def restore_paragraph(self, step_id: str, *, move_head: bool = False) -> Step:
        """Bring a deleted paragraph back into the story, and its memory back into recall (undo
        of `delete_paragraph`); with `move_head`, writing continues from it, in the same
        transaction."""

    def update_short_term_memory(self, step_id: str, short_term_memory: str) -> Step:
        """A person's edit of the short-term memory; the next step reads it."""

    def step_context(self, step_id: str) -> StepContext | None:
        """What the step's writer was given, as committed with it; None if it was not recorded.

        Each recalled memory carries its text as stored now (see `longyarn.recurrent_core.context`).
        """

    # ---- long-term memory ----
    def memory_version(self, story_id: str) -> int:
        """A counter bumped in the same transaction as any change to the story's memories."""

    def memory_vectors(
        self, story_id: str, embedding_model: str
    ) -> tuple[int, list[MemoryEntry], np.ndarray]:
        """(version, entries, float32 matrix of shape (len(entries), dim)) for one embedding model."""

    def memory_for_step(self, step_id: str) -> MemoryEntry | None:
        """The long-term memory made from a step's paragraph, if it has one."""

    def set_memory_flags(
        self, memory_id: str, *, pinned: bool | None = None, excluded: bool | None = None
    ) -> MemoryEntry: ...

    def search_memories(self, story_id: str, text: str, limit: int = 20) -> list[MemoryEntry]:
        """Memories whose text contains `text` (case-insensitive)."""
