"""A closed chapter's one-paragraph summary, asked of the model (the chapter_summary role).

The summary becomes part of the third memory tier (chapter_memory.py). A chapter longer than
one request can hold is summarised in parts first, then the parts' summaries together, so every
request fits the context budget. Where no model can write it (a prose-only model, or a reply
that cannot be read even after repairs), the chapter's opening sentences stand in, and the
fallback says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .chapter_memory import CHAPTER_TEXT
from .engine import Engine
from .errors import InvalidInput
from .replies import fallbacks as fallback_sentences
from .replies.chapter_summary import parse_chapter_summary, summary_from_opening
from .types import Usage

SUMMARY_WORDS = 80
# Never more rounds of parts than this, however long the chapter (each shrinks it a lot).
MAX_ROUNDS = 3
NOTHING_TO_SUMMARISE = (
    "The chapter has no paragraphs yet, so there is nothing to summarise; nothing was changed; "
    "write some first, or type its summary yourself."
)


@dataclass(frozen=True)
class ChapterSummary:
    """A chapter's summary, the title the model proposed (None if none), and the fallbacks taken."""

    summary: str
    title: str | None
    fallbacks: tuple[str, ...]
    usage: Usage


async def summarise_chapter(
    engine: Engine,
    story_id: str,
    paragraphs: Sequence[str],
    *,
    chapter: str,
    words: int = SUMMARY_WORDS,
    give_up_quietly: bool = True,
) -> ChapterSummary:
    """The summary of a chapter made of `paragraphs` (which the author calls `chapter`).

    With `give_up_quietly`, a model that fails for good gives the opening-sentences summary
    (batch goes on); without it, its `ModelError` goes to the caller (a writer can try again).
    """
    paragraphs = [paragraph.strip() for paragraph in paragraphs if paragraph.strip()]
    if not paragraphs:
        raise InvalidInput(NOTHING_TO_SUMMARISE)
    if engine.backend.info.prose_only:
        return ChapterSummary(
            summary_from_opening(paragraphs), None, (fallback_sentences.PROSE_ONLY_CHAPTER_SUMMARY,), Usage()
        )
    story = await engine.story(story_id)
    fitter = engine.fitter(story_id)
    usage = Usage()
    text = "\n\n".join(paragraphs)
    prompt = fitter.chapter_summary(story, text, chapter=chapter, words=words)
    for _round in range(MAX_ROUNDS):
        room = next(section for section in prompt.context if section.name == CHAPTER_TEXT)
        if not room.trimmed_chars:
            break
        # Too long for one request: each part that fits is summarised, then the parts together.
        parts = _parts(text.split("\n\n"), max(500, int(len(room.text) * 0.9)))
        summaries = []
        for number, part in enumerate(parts, 1):
            part_prompt = fitter.chapter_summary(
                story, part, chapter=f"{chapter}, part {number} of {len(parts)}", words=words
            )
            reply = await engine.calls.ask_structured(
                "chapter_summary", part_prompt, fitter, give_up_quietly=give_up_quietly
            )
            usage += reply.usage
            summaries.append(parse_chapter_summary(reply.text, cut_off=reply.cut_off).summary or summary_from_opening([part]))
        text = "\n\n".join(summaries)
        prompt = fitter.chapter_summary(story, text, chapter=chapter, words=words)
    reply = await engine.calls.ask_structured("chapter_summary", prompt, fitter, give_up_quietly=give_up_quietly)
    usage += reply.usage
    parsed = parse_chapter_summary(reply.text, cut_off=reply.cut_off)
    notices = engine.backend.take_notices()
    if parsed.summary is None:
        fallbacks = (fallback_sentences.CHAPTER_SUMMARY_FROM_OPENING, *notices)
        return ChapterSummary(summary_from_opening(paragraphs), None, fallbacks, usage)
    cut = (fallback_sentences.CHAPTER_SUMMARY_CUT,) if parsed.truncated else ()
    return ChapterSummary(parsed.summary, parsed.title, (*cut, *notices), usage)


def _parts(paragraphs: Sequence[str], size: int) -> list[str]:
    """The paragraphs in groups of at most about `size` characters (a longer one alone)."""
    parts: list[str] = []
    current: list[str] = []
    for paragraph in paragraphs:
        if current and len("\n\n".join([*current, paragraph])) > size:
            parts.append("\n\n".join(current))
            current = []
        current.append(paragraph)
    if current:
        parts.append("\n\n".join(current))
    return parts
