"""What a step's writer was given: recorded compactly with the step, rebuilt for the context viewer.

Every section of a writer prompt is made of text that storage keeps anyway: the story bible comes
from the story, the short-term memory and the previous paragraph from the previous step, the
recalled passages from the long-term memories. So a step stores only, per section, its size, how
much was trimmed and a fingerprint of the text as sent, plus the ids and scores of the memories
it recalled (a few hundred bytes); `load_sent_context` rebuilds the text from those sources. If a
source was edited since (an outline, a memory, a paragraph), the fingerprint no longer matches
and the section is shown as it reads now, marked as such.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from .store import StoryStore
from .types import (
    ContextSection,
    RecalledMemory,
    SectionRecord,
    SentContext,
    Step,
    StepContext,
    Story,
)

STORY_BIBLE = "Story bible"  # title, genre and premise
OUTLINE = "Outline"
AUTHORS_NOTE = "Author's note"
SHORT_TERM_MEMORY = "Short-term memory"
RECALLED_PASSAGES = "Recalled passages"
PREVIOUS_PARAGRAPH = "Previous paragraph"
# Sections of the other roles' prompts (see role_prompts).
NEW_PARAGRAPH = "New paragraph"
LATEST_PARAGRAPH = "Latest paragraph"
PREMISE = "Premise"
TEXT_TO_SUMMARISE = "Text to summarise"
TEXT_BEFORE = "Text before the passage"
# Trimmed from the start, keeping the end: the part right before the new text matters most.
TRIMMED_FROM_START = frozenset({PREVIOUS_PARAGRAPH, TEXT_BEFORE})
ELLIPSIS = "…"


def story_bible_text(story: Story) -> str:
    """The story bible section: title, genre and premise (the outline is a section of its own,
    so a long premise can be trimmed before the outline is)."""
    lines = [f"Title: {story.title}"]
    if story.genre:
        lines.append(f"Genre: {story.genre}")
    lines.append(f"Premise: {story.premise}")
    return "\n".join(lines)


def _story_bible_with_outline(story: Story) -> str:
    """The story bible as steps written before the outline had its own section held it."""
    text = story_bible_text(story)
    if story.outline and story.outline != story.premise:
        text += f"\nOutline: {story.outline}"
    return text


def authors_note_text(story: Story) -> str:
    note = story.settings.get("authors_note") or ""
    return str(note.get("text") or "") if isinstance(note, dict) else str(note)


def recalled_passages_text(recalled: Iterable[RecalledMemory]) -> str:
    return "\n\n".join(memory.text for memory in recalled)


def trim_text(text: str, keep_chars: int, *, from_start: bool) -> str:
    """Cut `text` to about `keep_chars`, at a word boundary, marking the cut with an ellipsis.

    The result is always a prefix of `text` plus the ellipsis (or the ellipsis plus a suffix
    when `from_start`): `_as_sent` relies on that to rebuild it from its length alone.
    """
    if keep_chars >= len(text):
        return text
    if keep_chars <= 0:
        return ""
    if from_start:
        cut = text[len(text) - keep_chars :]
        space = cut.find(" ")
        return ELLIPSIS + (cut[space + 1 :] if 0 <= space < 40 else cut)
    cut = text[:keep_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > len(cut) - 40 else cut) + ELLIPSIS


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def record_step_context(
    sections: Iterable[ContextSection],
    recalled: Iterable[RecalledMemory],
    *,
    template: str = "",
    budget_tokens: int = 0,
    prompt_tokens: int = 0,
    trimmed_elsewhere: Iterable[tuple[str, str, int]] = (),
) -> StepContext:
    """The compact record of a writer prompt that is stored with its step: its sections, the
    memories it recalled, where its template came from, the budget and the whole prompt's
    size, and what the step's other requests (memory, planner) had trimmed."""
    return StepContext(
        sections=tuple(
            SectionRecord(s.name, s.tokens, len(s.text), s.trimmed_chars, fingerprint(s.text))
            for s in sections
        ),
        recalled=tuple(recalled),
        template=template,
        budget_tokens=budget_tokens,
        prompt_tokens=prompt_tokens,
        trimmed_elsewhere=tuple(trimmed_elsewhere),
    )


def rebuild_sent_context(
    record: StepContext, *, instruction: str, story: Story, previous: Step | None
) -> SentContext:
    """The sections as they were sent, rebuilt from their sources as stored now."""
    names = {section.name for section in record.sections}
    sources = {
        STORY_BIBLE: story_bible_text(story) if OUTLINE in names else _story_bible_with_outline(story),
        OUTLINE: story.outline if story.outline != story.premise else "",
        AUTHORS_NOTE: authors_note_text(story),
        SHORT_TERM_MEMORY: previous.short_term_memory if previous else "",
        RECALLED_PASSAGES: recalled_passages_text(record.recalled),
        PREVIOUS_PARAGRAPH: previous.paragraph if previous else "",
    }
    sections, edited = [], set()
    for section in record.sections:
        source = sources.get(section.name, "")
        text = _as_sent(source, section)
        if fingerprint(text) != section.fingerprint:
            text = source  # edited since: what it says now, untrimmed, and marked as such
            edited.add(section.name)
        sections.append(ContextSection(section.name, text, section.tokens, section.trimmed_chars))
    return SentContext(
        instruction,
        tuple(sections),
        record.recalled,
        frozenset(edited),
        template=record.template,
        budget_tokens=record.budget_tokens,
        prompt_tokens=record.prompt_tokens,
        trimmed_elsewhere=record.trimmed_elsewhere,
    )


def load_sent_context(store: StoryStore, step_id: str) -> SentContext | None:
    """What the writer was given for a stored step; None if its context was not recorded
    (steps stored before longyarn recorded it, or by tools that store steps themselves)."""
    record = store.step_context(step_id)
    if record is None:
        return None
    step = store.get_step(step_id)
    story = store.get_story(step.story_id)
    previous = store.get_step(step.parent_id) if step.parent_id else None
    return rebuild_sent_context(record, instruction=step.instruction, story=story, previous=previous)


def _as_sent(source: str, section: SectionRecord) -> str:
    """`source` cut as `trim_text` cut it, knowing only the length of what was sent."""
    if section.trimmed_chars == 0:
        return source
    if section.chars == 0:
        return ""
    keep = max(0, min(len(source), section.chars - len(ELLIPSIS)))
    if section.name in TRIMMED_FROM_START:
        return ELLIPSIS + source[len(source) - keep :]
    return source[:keep] + ELLIPSIS
