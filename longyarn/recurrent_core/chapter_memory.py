"""Chapters as the third memory tier: what the writer's prompt says about the chapters so far.

Between the short-term memory (the last few paragraphs) and the recalled passages (old
paragraphs by similarity) sits the "Chapters" section: the chapter being written (its number,
title and outline, if the writer gave one) and the summaries of the chapters before it, newest
first. A story with no chapters has no such section, so its prompts are exactly as before.

A chapter's title may be empty: it is then called "Chapter N" after its place, so numbers stay
right when chapters are split or merged. Plain text only; the fitter (role_prompts) measures
and trims it, and the context viewer (context.py) rebuilds it from the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .bible import Chapter
from .types import Step

CHAPTERS = "Chapters"  # the writer prompt's section name
CHAPTER_TEXT = "Chapter text"  # the chapter_summary prompt's section: the chapter to summarise


@dataclass(frozen=True)
class ChapterPlace:
    """A chapter where it sits on a branch: its number (1-based) and its paragraphs."""

    chapter: Chapter
    number: int
    first: int  # its first paragraph's number
    last: int  # its last paragraph's number (first - 1 for a chapter with none yet)

    @property
    def name(self) -> str:
        return chapter_name(self.chapter.title, self.number)

    @property
    def paragraphs(self) -> int:
        return max(0, self.last - self.first + 1)


def chapter_name(title: str, number: int) -> str:
    """What a chapter is called: its title, or "Chapter N" when it has none."""
    return " ".join(title.split()) or f"Chapter {number}"


def chapter_places(chapters: Sequence[tuple[Chapter, int]], paragraphs: int) -> list[ChapterPlace]:
    """The branch's chapters (as `StoryStore.chapters_on_branch` gives them) with their
    paragraph ranges, on a branch of `paragraphs` paragraphs."""
    places = []
    for index, (chapter, first) in enumerate(chapters):
        following = chapters[index + 1][1] if index + 1 < len(chapters) else paragraphs + 1
        places.append(ChapterPlace(chapter, index + 1, first, max(first, following) - 1))
    return places


def chapter_headings(places: Sequence[ChapterPlace], steps: Sequence[Step]) -> dict[str, str]:
    """Each chapter's name by the id of its first paragraph, for `steps` (the branch from its
    first paragraph on); a chapter with no paragraph there yet has none."""
    return {steps[place.first - 1].id: place.name for place in places if place.paragraphs and place.first <= len(steps)}


def chapter_of(places: Sequence[ChapterPlace], paragraph: int) -> ChapterPlace | None:
    """The chapter that holds paragraph `paragraph`, if any."""
    return next((place for place in reversed(places) if place.first <= paragraph), None)


def _quoted_title(place: ChapterPlace) -> str:
    title = " ".join(place.chapter.title.split())
    return f', "{title}"' if title else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def chapter_memory_entries(
    chapters: Sequence[tuple[Chapter, int]], next_paragraph: int, closed_at: int | None = None
) -> list[str]:
    """The lines of the Chapters section for paragraph `next_paragraph`: the chapter it is in
    first, then the earlier chapters, newest first. Empty when the branch has no chapters.

    The chapter being written is the last one, unless it is closed: then this paragraph begins
    the next chapter, and every chapter so far is an earlier one. Where paragraphs that begin
    no chapter (a reader's own) follow a closed chapter, `closed_at` is its last paragraph, and
    the next chapter began after it.
    """
    places = chapter_places(chapters, next_paragraph - 1)
    if not places:
        return []
    current = places[-1]
    if current.chapter.closed:
        lines = [f"This paragraph begins chapter {current.number + 1}."]
        if closed_at is not None and current.first <= closed_at < next_paragraph - 1:
            places[-1] = replace(current, last=closed_at)
            lines = [f"This paragraph is in chapter {current.number + 1}, which began at paragraph {closed_at + 1}."]
        earlier = places
    else:
        line = (
            f"This paragraph is in chapter {current.number}{_quoted_title(current)}, "
            f"which began at paragraph {current.first}."
        )
        if current.chapter.summary.strip():
            line += f" Its outline: {_one_line(current.chapter.summary)}"
        lines = [line]
        earlier = places[:-1]
    for place in reversed(earlier):
        span = f"paragraph {place.first}" if place.paragraphs <= 1 else f"paragraphs {place.first}-{place.last}"
        summary = _one_line(place.chapter.summary) or "(no summary yet)"
        lines.append(f"Chapter {place.number}{_quoted_title(place)} ({span}): {summary}")
    return lines


def scene_break_rule(has_chapters: bool) -> str:
    """What the writer prompt's reply format adds for a story with chapters: how the model
    marks the end of a chapter (see replies/scene_break.py). Nothing for a story without."""
    if not has_chapters:
        return ""
    return (
        " If this paragraph ends the current chapter at a natural scene break, end your reply "
        "with one more line that holds only three asterisks: * * *"
    )
