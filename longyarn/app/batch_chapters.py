"""Chapters in `longyarn batch --chapter-every N`: no one is at the keyboard, so a chapter ends
by itself, with the model's summary (and title), every N paragraphs at the latest, or sooner
where the model marks a scene break once the chapter holds at least half of N.

Off by default (N = 0): a batch novel without the option gets no chapters, and its prompts and
files are exactly what they were before chapters existed. With N, the story gets its first
chapter from the start, so every prompt carries the Chapters section and the scene-break mark.
"""

from __future__ import annotations

from typing import Protocol

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.types import StepCompleted

from .session.writing import WritingSession


class Reports(Protocol):
    def fallback(self, where: str, sentence: str, story_id: str | None = None) -> None: ...

    def progress(self, message: str) -> None: ...


def check_chapter_every(chapter_every: int) -> None:
    if chapter_every < 0:
        raise InvalidInput(
            "--chapter-every must be 0 (no chapters) or more; nothing was written; pass a number of paragraphs."
        )


class ChapterKeeper:
    """Ends the batch novel's chapters as it is written (see the module docstring)."""

    def __init__(self, session: WritingSession, chapter_every: int, reporter: Reports) -> None:
        check_chapter_every(chapter_every)
        self.session = session
        self.every = chapter_every
        self.reporter = reporter
        # A scene break ends a chapter only once it holds this many paragraphs.
        self.shortest = max(1, (chapter_every + 1) // 2)

    async def begin(self) -> None:
        """A story without chapters gets its first, from its start (with chapters on)."""
        if self.every:
            await self.session.begin_chapters()

    async def after(self, event: StepCompleted) -> None:
        """End the chapter being written if it is long enough, or the model ended it."""
        current = self.session.current_chapter()
        if not self.every or current is None:
            return
        marked = event.chapter_ends and current.paragraphs >= self.shortest
        if current.paragraphs < self.every and not marked:
            return
        story_id = self.session.story_id
        drafted = await self.session.draft_chapter_summary(give_up_quietly=True)
        where = f"[{story_id}] {current.name}"
        for sentence in drafted.fallbacks:
            self.reporter.fallback(where, sentence, story_id)
        title = drafted.title if not current.chapter.title else None
        ended = await self.session.end_chapter(drafted.summary, title)
        why = "the model marked a scene break" if marked and current.paragraphs < self.every else (
            f"{current.paragraphs} paragraphs"
        )
        self.reporter.progress(
            f"[{story_id}] chapter {ended.number} ended after paragraph {ended.last} ({why}): {ended.name}"
        )
