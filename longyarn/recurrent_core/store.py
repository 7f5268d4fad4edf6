"""The persistence interface the engine talks to.

`longyarn.storage.stories.SqlStories` implements it with SQLAlchemy; the engine never imports storage.
Methods are synchronous and thread-safe; the engine calls them through `asyncio.to_thread`.
Every method that changes data does so in one transaction, or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .bible import BibleEntry, BibleFact, Chapter, EntryDraft, FactDraft, KeptUpdate
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

    # ---- the story bible (see longyarn.recurrent_core.bible): entries belong to the story,
    # facts to the branch they were learned on; a bad change raises `BibleError` ----
    def list_entries(self, story_id: str) -> list[BibleEntry]:
        """The story's bible entries, by kind (in ENTRY_KINDS order), then by name."""

    def get_entry(self, entry_id: str) -> BibleEntry: ...

    def add_entry(
        self,
        story_id: str,
        *,
        name: str,
        kind: str,
        aliases: Sequence[str] = (),
        secondary_keys: Sequence[str] = (),
        description: str = "",
        notes: str = "",
        always: bool = False,
        facts: Sequence[FactDraft] = (),
    ) -> BibleEntry:
        """A new entry and its writer-entered (story-wide) facts, in one transaction; its name
        and aliases may be no other entry's name or alias (case-insensitive)."""

    def update_entry(self, entry_id: str, **fields: object) -> BibleEntry:
        """Change name, kind, aliases, secondary_keys, description, notes or always."""

    def remove_entry(self, entry_id: str) -> None:
        """Remove the entry and all its facts, on every branch."""

    def import_entries(
        self, story_id: str, drafts: Sequence[EntryDraft], *, replace: bool = False
    ) -> list[BibleEntry]:
        """Add many entries with their facts in one transaction; with `replace`, the story's
        entries (and their facts) go first. All or nothing."""

    def add_fact(
        self,
        entry_id: str,
        text: str,
        *,
        from_paragraph: int,
        until_paragraph: int | None = None,
        step_id: str | None = None,
    ) -> BibleFact:
        """A fact of the entry; with `step_id`, learned after that paragraph and seen only on
        branches that hold it (its branch owner is that step's)."""

    def end_fact(self, fact_id: str, until_paragraph: int) -> BibleFact:
        """The fact holds through paragraph `until_paragraph` and no further."""

    def edit_fact(self, fact_id: str, **fields: object) -> BibleFact:
        """Change text, from_paragraph or until_paragraph (None: it still holds)."""

    def remove_fact(self, fact_id: str) -> None: ...

    def facts_on_branch(self, story_id: str, head_step_id: str | None) -> list[BibleFact]:
        """The facts seen on the branch from the root to `head_step_id`: story-wide ones, and
        those learned after a live paragraph of that branch. None: before the first paragraph,
        so only story-wide facts. Ordered by from_paragraph, then by when they were added."""

    def entry_facts(self, entry_id: str) -> list[BibleFact]:
        """Every fact of the entry, on every branch (readers' too), in `facts_on_branch` order."""

    def restore_entry(self, entry: BibleEntry, facts: Sequence[BibleFact] = ()) -> BibleEntry:
        """Put back an entry that `remove_entry` removed, with its facts, ids and times as they
        were, in one transaction (the undo of a removal); its names must still be free."""

    def restore_fact(self, fact: BibleFact) -> BibleFact:
        """Put back a fact that `remove_fact` removed, id and all (the undo of a removal)."""

    # ---- the bible's proposed updates, kept while they wait for the writer ----
    def keep_proposed_updates(self, story_id: str, updates: Sequence[KeptUpdate]) -> None:
        """Keep newly proposed updates, waiting, after those kept before (in the order given)."""

    def decide_proposed_update(self, update_id: str, decision: str | None, problem: str | None = None) -> None:
        """Record "accepted" or "rejected" (None: it waits again, as undo leaves it), and why
        accepting it failed (None: no problem)."""

    def waiting_updates(self, story_id: str, head_step_id: str | None) -> list[KeptUpdate]:
        """The updates still waiting that came from paragraphs of the branch to `head_step_id`
        (or from none), in the order they arrived."""

    # ---- chapters ----
    def list_chapters(self, story_id: str) -> list[Chapter]:
        """Every chapter of the story, on any branch, oldest first."""

    def get_chapter(self, chapter_id: str) -> Chapter: ...

    def add_chapter(
        self,
        story_id: str,
        *,
        title: str,
        summary: str = "",
        start_step_id: str | None = None,
        closed: bool = False,
    ) -> Chapter:
        """A chapter starting at `start_step_id` (None: the story's start)."""

    def update_chapter(self, chapter_id: str, **fields: object) -> Chapter:
        """Change title, summary, start_step_id or closed."""

    def remove_chapter(self, chapter_id: str) -> None: ...

    def chapters_on_branch(self, story_id: str, head_step_id: str | None) -> list[tuple[Chapter, int]]:
        """The chapters that start on the branch ending at `head_step_id`, in story order, each
        with the number of its first paragraph (1-based; one past the last for an empty one)."""
