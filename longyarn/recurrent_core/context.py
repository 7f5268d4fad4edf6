"""What a step's writer was given: recorded compactly with the step, rebuilt for the context viewer.

Every section of a writer prompt is made of text that storage keeps anyway: the story frame comes
from the story, the short-term memory and the previous paragraph from the previous step, the
recalled passages from the long-term memories, the story bible's entries and facts from the bible.
So a step stores only, per section, its size, how much was trimmed and a fingerprint of the text as
sent, plus the ids and scores of the memories it recalled and the bible entries it activated, with
why (a few hundred bytes); `load_sent_context` rebuilds the text from those sources. If a
source was edited since (an outline, a memory, a paragraph), the fingerprint no longer matches
and the section is shown as it reads now, marked as such.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Iterable

from .bible import BibleEntry, BibleFact
from .chapter_memory import CHAPTERS, chapter_memory_entries
from .store import StoryStore
from .types import (
    BibleActivation,
    Contradiction,
    ContextSection,
    RecalledMemory,
    SectionRecord,
    SentContext,
    Step,
    StepContext,
    Story,
)

STORY_FRAME = "Story frame"  # title, genre and premise
OUTLINE = "Outline"
AUTHORS_NOTE = "Author's note"
SHORT_TERM_MEMORY = "Short-term memory"
RECALLED_PASSAGES = "Recalled passages"
FACTS_TO_CHECK = "Facts to check"  # the continuity role's: facts in force that the writer was sent
STORY_BIBLE = "Story bible"  # the bible entries activated for this paragraph, one a line
PREVIOUS_PARAGRAPH = "Previous paragraph"
# Sections of the other roles' prompts (see role_prompts).
NEW_PARAGRAPH = "New paragraph"
LATEST_PARAGRAPH = "Latest paragraph"
PREMISE = "Premise"
TEXT_TO_SUMMARISE = "Text to summarise"
TEXT_BEFORE = "Text before the passage"
# Trimmed from the start, keeping the end: the part right before the new text matters most.
TRIMMED_FROM_START = frozenset({PREVIOUS_PARAGRAPH, TEXT_BEFORE})
# Trimmed by whole lines from the end: a bible entry is sent whole or not at all.
TRIMMED_BY_WHOLE_LINES = frozenset({STORY_BIBLE})
ELLIPSIS = "…"
# Section names that steps stored before a rename still hold, and what each is called now.
FORMER_SECTION_NAMES = {"Story bible": STORY_FRAME}


def story_frame_text(story: Story) -> str:
    """The story frame section: title, genre and premise (the outline is a section of its own,
    so a long premise can be trimmed before the outline is)."""
    lines = [f"Title: {story.title}"]
    if story.genre:
        lines.append(f"Genre: {story.genre}")
    lines.append(f"Premise: {story.premise}")
    return "\n".join(lines)


def _story_frame_with_outline(story: Story) -> str:
    """The story frame as steps written before the outline had its own section held it."""
    text = story_frame_text(story)
    if story.outline and story.outline != story.premise:
        text += f"\nOutline: {story.outline}"
    return text


def authors_note_text(story: Story) -> str:
    note = story.settings.get("authors_note") or ""
    return str(note.get("text") or "") if isinstance(note, dict) else str(note)


def recalled_passages_text(recalled: Iterable[RecalledMemory]) -> str:
    return "\n\n".join(memory.text for memory in recalled)


def bible_entry_line(entry: BibleEntry, facts: Iterable[BibleFact]) -> str:
    """One entry as the story bible section holds it, on one line: name (kind; also its aliases):
    description. Facts: its facts in force. The notes are the writer's own and never sent."""
    label = entry.kind + (f"; also {', '.join(entry.aliases)}" if entry.aliases else "")
    parts = [f"{entry.name} ({label})"]
    description = " ".join(entry.description.split())
    if description:
        parts.append(description if description[-1] in ".!?…\"')" else description + ".")
    fact_texts = [" ".join(fact.text.split()).rstrip(".") for fact in facts]
    fact_texts = [text for text in fact_texts if text]
    if fact_texts:
        parts.append("Facts: " + "; ".join(fact_texts) + ".")
    if len(parts) == 1:
        return parts[0] + "."
    return f"{parts[0]}: " + " ".join(parts[1:])


def sent_bible_text(
    activation: BibleActivation, entries: Iterable[BibleEntry], facts: Iterable[BibleFact]
) -> str:
    """The story bible section as `activation` sent it, from the entries and facts as stored now
    (an entry removed since is left out; a fact edited since reads as it does now)."""
    entry_by_id = {entry.id: entry for entry in entries}
    fact_by_id = {fact.id: fact for fact in facts}
    lines = []
    for sent in activation.sent:
        entry = entry_by_id.get(sent.entry_id)
        if entry is None:
            continue
        line = bible_entry_line(entry, (fact_by_id[i] for i in sent.fact_ids if i in fact_by_id))
        if sent.cut_to_chars:
            line = line[: max(0, sent.cut_to_chars - len(ELLIPSIS))] + ELLIPSIS
        lines.append(line)
    return "\n".join(lines)


def trim_whole_lines(text: str, keep_chars: int) -> str:
    """The first lines of `text` that fit in `keep_chars` (none cut partway)."""
    kept, used = [], 0
    for line in text.split("\n"):
        used += len(line) + (1 if kept else 0)
        if used > keep_chars:
            break
        kept.append(line)
    return "\n".join(kept)


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
    bible: BibleActivation | None = None,
    contradictions: "tuple[Contradiction, ...] | None" = None,
) -> StepContext:
    """The compact record of a writer prompt that is stored with its step: its sections, the
    memories it recalled, where its template came from, the budget and the whole prompt's
    size, what the step's other requests (memory, planner) had trimmed, and the story bible
    entries it activated, with why."""
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
        bible=bible,
        contradictions=contradictions,
    )


def rebuild_sent_context(
    record: StepContext,
    *,
    instruction: str,
    story: Story,
    previous: Step | None,
    bible_text: str = "",
    chapters_text: str = "",
) -> SentContext:
    """The sections as they were sent, rebuilt from their sources as stored now; under their
    current names, whatever name the step stored them under."""
    record = _with_current_names(record)
    names = {section.name for section in record.sections}
    sources = {
        STORY_FRAME: story_frame_text(story) if OUTLINE in names else _story_frame_with_outline(story),
        OUTLINE: story.outline if story.outline != story.premise else "",
        AUTHORS_NOTE: authors_note_text(story),
        SHORT_TERM_MEMORY: previous.short_term_memory if previous else "",
        RECALLED_PASSAGES: recalled_passages_text(record.recalled),
        PREVIOUS_PARAGRAPH: previous.paragraph if previous else "",
        STORY_BIBLE: bible_text,  # already as sent (see `sent_bible_text`)
        CHAPTERS: chapters_text,  # whole; cut as sent below (see role_prompts._chapters_section)
    }
    sections, edited = [], set()
    for section in record.sections:
        source = sources.get(section.name, "")
        text = source if section.name == STORY_BIBLE else _as_sent(source, section)
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
        bible=record.bible,
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
    bible_text = ""
    if record.bible is not None:  # the facts as the step's own branch saw them
        bible_text = sent_bible_text(
            record.bible, store.list_entries(story.id), store.facts_on_branch(story.id, step.parent_id)
        )
    chapters_text = ""
    if any(section.name == CHAPTERS for section in record.sections):
        chapters_text = _chapters_source(store, story.id, step.parent_id)
    return rebuild_sent_context(
        record, instruction=step.instruction, story=story, previous=previous, bible_text=bible_text,
        chapters_text=chapters_text,
    )


def _chapters_source(store: StoryStore, story_id: str, parent_id: str | None) -> str:
    """The Chapters section, whole, as the branch up to `parent_id` reads now."""
    paragraphs = len(store.branch_step_ids(story_id, parent_id)) if parent_id else 0
    return "\n".join(chapter_lines(store, story_id, parent_id, paragraphs))


def chapter_lines(store: StoryStore, story_id: str, parent_id: str | None, paragraphs: int) -> list[str]:
    """The Chapters section's lines for the paragraph after `parent_id` (`paragraphs` on its
    branch), as `chapter_memory_entries` writes them."""
    chapters, closed_at = store.chapters_on_branch(story_id, parent_id), None
    if chapters and chapters[-1][0].closed and parent_id:
        # Closed at the author's last paragraph: a reader's own paragraphs begin no chapter.
        closed_at = sum(step.branch_owner is None for step in store.branch(story_id, parent_id))
    return chapter_memory_entries(chapters, paragraphs + 1, closed_at)


def _with_current_names(record: StepContext) -> StepContext:
    """`record` with each section (its own, and those trimmed from the step's other requests)
    under the name it has now. A record that holds a section's new name was written after the
    rename, and a former name in it means something else now (the story bible's entries)."""
    stored = {section.name for section in record.sections}
    renamed = {old: new for old, new in FORMER_SECTION_NAMES.items() if new not in stored}

    def current(name: str) -> str:
        return renamed.get(name, name)

    return replace(
        record,
        sections=tuple(replace(section, name=current(section.name)) for section in record.sections),
        trimmed_elsewhere=tuple((role, current(name), chars) for role, name, chars in record.trimmed_elsewhere),
    )


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
