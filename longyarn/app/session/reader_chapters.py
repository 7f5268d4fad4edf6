"""The chapter headings a reader sees on their path: each chapter's name above the paragraph that
begins it (the author's chapters; a reader's own paragraphs begin none)."""

from __future__ import annotations

from longyarn.recurrent_core.chapter_memory import chapter_headings as headings_on, chapter_places
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step


def chapter_headings(store: StoryStore, story_id: str, path: list[Step]) -> dict[str, str]:
    """Each chapter's name by the id of its first paragraph on `path` (the steps from the story's
    first paragraph to the reader's place). A story without chapters costs one small query."""
    if not path or not store.list_chapters(story_id):
        return {}
    return headings_on(chapter_places(store.chapters_on_branch(story_id, path[-1].id), len(path)), path)
