"""A writer's chapters: ending one with its summary (typed, or the model's), renaming, splitting,
merging and moving where one begins; each an undoable change of the writer's history.

A story has no chapters until the writer makes one: ending the first chapter, or starting one
at a paragraph, gives the story a first chapter from its start. The chapter being written is
the last one on the branch; once it is ended (closed, with its summary), the next paragraph
written begins a new one. A chapter with no title is called "Chapter N" after its place (see
`recurrent_core.chapter_memory`). `ChapterEdits` is mixed into `WritingSession`, whose store,
story, branch, history and `reload` it uses; bad input raises `InvalidInput` (one sentence)
and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from longyarn.recurrent_core.chapter_memory import ChapterPlace, chapter_of, chapter_places
from longyarn.recurrent_core.chapter_memory import chapter_headings as headings_on
from longyarn.recurrent_core.chapter_summaries import ChapterSummary, summarise_chapter
from longyarn.recurrent_core.errors import InvalidInput
from longyarn.recurrent_core.types import Step

from .history import Change, History

if TYPE_CHECKING:  # the session's own attributes, which this mixin uses
    from longyarn.recurrent_core.store import StoryStore

    from .engine_host import EngineHost

NO_CHAPTER = "That chapter is no longer in this story, so nothing was changed; look at the story again."


class ChapterEdits:
    """The chapters of the branch at the head (`chapters`), and every change to them."""

    store: StoryStore
    host: EngineHost
    story_id: str
    branch: list[Step]
    history: History
    position: Any
    reload: Callable[[], Awaitable[None]]
    chapters: list[ChapterPlace]

    # ---- reading ----

    def _read_chapters(self, head_id: str | None, paragraphs: int) -> list[ChapterPlace]:
        """The chapters of the branch ending at `head_id` (in a thread: it reads the store)."""
        if not self.store.list_chapters(self.story_id):
            return []
        return chapter_places(self.store.chapters_on_branch(self.story_id, head_id), paragraphs)

    async def refresh_chapters(self) -> list[ChapterPlace]:
        head = self.branch[-1].id if self.branch else None
        self.chapters = await asyncio.to_thread(self._read_chapters, head, len(self.branch))
        return self.chapters

    def chapter_of_step(self, step_id: str) -> ChapterPlace | None:
        """The chapter that holds the paragraph `step_id` of the branch, if any."""
        return chapter_of(self.chapters, self._paragraph_number(step_id))

    def current_chapter(self) -> ChapterPlace | None:
        """The chapter being written: the branch's last, unless it is ended (then the next
        paragraph begins a new one, and there is none yet)."""
        if self.chapters and not self.chapters[-1].chapter.closed:
            return self.chapters[-1]
        return None

    def chapter_headings(self) -> dict[str, str]:
        """Each chapter's name by the id of its first paragraph (what the story view shows)."""
        return headings_on(self.chapters, self.branch)

    def chapter_paragraphs(self, place: ChapterPlace) -> list[str]:
        return [step.paragraph for step in self.branch[place.first - 1 : place.last]]

    async def begin_chapters(self) -> None:
        """Give a story without chapters its first, from its start (an undoable change)."""
        if self.chapters:
            return
        made = await MadeChapter.add(self.store, self.story_id)
        await self.refresh_chapters()
        self.history.record(self._creation_change("the story's first chapter", made, None))

    # ---- ending a chapter ----

    async def draft_chapter_summary(self, chapter_id: str | None = None, *, give_up_quietly: bool = False) -> ChapterSummary:
        """The model's summary (and title) of a chapter (default: the one being written);
        nothing is stored. A prose-only model gives the chapter's opening sentences, and says so."""
        place = self._place(chapter_id) if chapter_id else self._chapter_to_end()
        paragraphs = self.chapter_paragraphs(place) if place else [step.paragraph for step in self.branch]
        name = place.name if place else "Chapter 1"
        why = "No model is ready to summarise the chapter; type its summary, or try again once the model has loaded."
        async with self.host.model(why) as engine:
            return await summarise_chapter(
                engine, self.story_id, paragraphs, chapter=name, give_up_quietly=give_up_quietly
            )

    async def end_chapter(self, summary: str, title: str | None = None) -> ChapterPlace:
        """End the chapter being written with its `summary` (and `title`, if given): the next
        paragraph begins a new chapter. A story without chapters gets its first, from its start."""
        summary = " ".join(summary.split())
        if not summary:
            raise InvalidInput(
                "A chapter ends with its summary, and this one is empty, so nothing was changed; "
                "type a summary, or ask the model for one."
            )
        if not self.branch:
            raise InvalidInput("The story has no paragraphs yet, so no chapter can end; nothing was changed; write some first.")
        place = self._chapter_to_end()
        fields: dict[str, object] = {"summary": summary, "closed": True}
        if title is not None and " ".join(title.split()):
            fields["title"] = " ".join(title.split())
        made = await MadeChapter.add(self.store, self.story_id) if place is None else None
        chapter_id = made.id if made is not None else place.chapter.id  # type: ignore[union-attr]
        before = {"summary": "", "closed": False, "title": ""} if place is None else {
            "summary": place.chapter.summary, "closed": place.chapter.closed, "title": place.chapter.title,
        }
        await asyncio.to_thread(self.store.update_chapter, chapter_id, **fields)
        await self.refresh_chapters()
        ended = self._place(chapter_id)
        self.history.record(self._update_change(f"the end of {ended.name}", chapter_id, before, fields, made))
        return ended

    def _chapter_to_end(self) -> ChapterPlace | None:
        """The chapter that ending one ends (None: the story has none yet, so its first)."""
        if not self.chapters:
            return None
        last = self.chapters[-1]
        if last.chapter.closed:
            raise InvalidInput(
                f"{last.name} has ended already, so nothing was changed; the next paragraph "
                f"begins chapter {last.number + 1}."
            )
        return last

    async def start_chapter_after_ended(self, step: Step) -> None:
        """After a paragraph lands: if the chapter before it had ended, it begins a new one."""
        chapters = await asyncio.to_thread(self._read_chapters, step.parent_id, len(self.branch) - 1)
        if chapters and chapters[-1].chapter.closed:
            await asyncio.to_thread(self.store.add_chapter, self.story_id, title="", start_step_id=step.id)
        await self.refresh_chapters()

    # ---- renaming and summaries ----

    async def rename_chapter(self, chapter_id: str, title: str) -> ChapterPlace:
        place = self._place(chapter_id)
        title = " ".join(title.split())
        if not title:
            raise InvalidInput(
                f"A chapter's title cannot be empty, so {place.name} keeps its name; type a title."
            )
        return await self._update(place, f"the renaming of {place.name}", title=title)

    async def save_chapter_summary(self, chapter_id: str, summary: str) -> ChapterPlace:
        place = self._place(chapter_id)
        return await self._update(place, f"the summary of {place.name}", summary=" ".join(summary.split()))

    async def _update(self, place: ChapterPlace, description: str, **fields: object) -> ChapterPlace:
        before = {name: getattr(place.chapter, name) for name in fields}
        if before == fields:
            return place
        await asyncio.to_thread(self.store.update_chapter, place.chapter.id, **fields)
        await self.refresh_chapters()
        self.history.record(self._update_change(description, place.chapter.id, before, fields))
        return self._place(place.chapter.id)

    # ---- splitting, merging, moving where one begins ----

    async def split_chapter(self, step_id: str) -> ChapterPlace:
        """A new chapter begins at paragraph `step_id`; the chapter that held it ends before it.
        A story without chapters gets its first, from its start, and the new one after it."""
        number = self._paragraph_number(step_id)
        place = chapter_of(self.chapters, number)
        if number == 1:
            raise InvalidInput(
                "The first paragraph always begins the first chapter, so nothing was changed; "
                "start a chapter at a later paragraph."
            )
        if place is not None and place.first == number:
            raise InvalidInput(
                f"Paragraph {number} already begins {place.name}, so nothing was changed; "
                "choose a paragraph inside a chapter."
            )
        first = await MadeChapter.add(self.store, self.story_id) if not self.chapters else None
        # The new chapter ends where the old one did: if that one had ended, so has this.
        closed = place.chapter.closed if place is not None else False
        made = await MadeChapter.add(self.store, self.story_id, start=step_id, closed=closed)
        await self.refresh_chapters()
        new = self._place(made.id)
        self.history.record(self._creation_change(f"the start of {new.name} at paragraph {number}", made, first))
        return new

    async def merge_chapter_with_next(self, chapter_id: str) -> ChapterPlace:
        """The chapter and the one after it become one: its title, both summaries, and the
        later one's ending."""
        place = self._place(chapter_id)
        if place.number == len(self.chapters):
            raise InvalidInput(
                f"{place.name} is the last chapter, so there is no next one to merge it with; "
                "nothing was changed."
            )
        following = self.chapters[place.number]
        removed = following.chapter
        before = {"summary": place.chapter.summary, "closed": place.chapter.closed}
        after = {
            "summary": " ".join(part for part in (place.chapter.summary, removed.summary) if part.strip()),
            "closed": removed.closed,
        }
        holder = {"id": removed.id}

        async def unmerge() -> None:
            await asyncio.to_thread(self.store.update_chapter, chapter_id, **before)
            restored = await asyncio.to_thread(
                self.store.add_chapter, self.story_id, title=removed.title, summary=removed.summary,
                start_step_id=removed.start_step_id, closed=removed.closed,
            )
            holder["id"] = restored.id
            await self.refresh_chapters()

        async def merge() -> None:
            await asyncio.to_thread(self.store.remove_chapter, holder["id"])
            await asyncio.to_thread(self.store.update_chapter, chapter_id, **after)
            await self.refresh_chapters()

        description = f"the merge of {place.name} with {following.name}"
        await merge()
        self.history.record(Change(description, undo=unmerge, redo=merge))
        return self._place(chapter_id)

    async def move_chapter_start(self, chapter_id: str, step_id: str) -> ChapterPlace:
        """The chapter begins at paragraph `step_id` instead: after the previous chapter's
        first paragraph and before the next chapter's."""
        place = self._place(chapter_id)
        number = self._paragraph_number(step_id)
        if place.number == 1:
            raise InvalidInput(
                "The first chapter always begins at the story's first paragraph, so nothing was "
                "changed; move the start of a later chapter."
            )
        if number == place.first:
            raise InvalidInput(f"{place.name} already begins at paragraph {number}; nothing was changed.")
        previous = self.chapters[place.number - 2]
        following = self.chapters[place.number] if place.number < len(self.chapters) else None
        limit = following.first - 1 if following is not None else len(self.branch)
        if not previous.first < number <= limit:
            raise InvalidInput(
                f"{place.name} can begin only between paragraphs {previous.first + 1} and {limit}, "
                f"after the start of {previous.name}{' and before the next chapter' if following else ''}, "
                f"so nothing was changed; choose a paragraph there."
            )
        return await self._update(
            place, f"the move of {place.name} to paragraph {number}", start_step_id=step_id
        )

    # ---- helpers ----

    def _place(self, chapter_id: str) -> ChapterPlace:
        place = next((p for p in self.chapters if p.chapter.id == chapter_id), None)
        if place is None:
            raise InvalidInput(NO_CHAPTER)
        return place

    def _paragraph_number(self, step_id: str) -> int:
        number = next((n for n, step in enumerate(self.branch, 1) if step.id == step_id), None)
        if number is None:
            raise InvalidInput(
                "That paragraph is not in the story as it reads now, so nothing was changed; "
                "choose one of its paragraphs."
            )
        return number

    def _update_change(
        self, description: str, chapter_id: str, before: dict, after: dict, made: MadeChapter | None = None
    ) -> Change:
        """A change of a chapter's fields; with `made`, the chapter was made by the change too."""
        target = made or MadeChapter(self.store, self.story_id, chapter_id)

        async def undo() -> None:
            if made is not None:
                await made.remove()
            else:
                await asyncio.to_thread(self.store.update_chapter, target.id, **before)
            await self.refresh_chapters()

        async def redo() -> None:
            if made is not None:
                await made.make()
            await asyncio.to_thread(self.store.update_chapter, target.id, **after)
            await self.refresh_chapters()

        return Change(description, undo=undo, redo=redo)

    def _creation_change(self, description: str, made: MadeChapter, first: MadeChapter | None) -> Change:
        """The start of a new chapter (and, with `first`, of the story's first chapter too)."""

        async def undo() -> None:
            await made.remove()
            if first is not None:
                await first.remove()
            await self.refresh_chapters()

        async def redo() -> None:
            if first is not None:
                await first.make()
            await made.make()
            await self.refresh_chapters()

        return Change(description, undo=undo, redo=redo)


class MadeChapter:
    """A chapter a change made: undo removes it, redo makes it again (under a new id)."""

    def __init__(
        self, store: StoryStore, story_id: str, chapter_id: str, *, start: str | None = None, closed: bool = False
    ) -> None:
        self.store, self.story_id, self.id = store, story_id, chapter_id
        self.start, self.closed = start, closed

    @classmethod
    async def add(cls, store: StoryStore, story_id: str, *, start: str | None = None, closed: bool = False) -> MadeChapter:
        made = cls(store, story_id, "", start=start, closed=closed)
        await made.make()
        return made

    async def make(self) -> None:
        chapter = await asyncio.to_thread(
            self.store.add_chapter, self.story_id, title="", start_step_id=self.start, closed=self.closed
        )
        self.id = chapter.id

    async def remove(self) -> None:
        await asyncio.to_thread(self.store.remove_chapter, self.id)
