"""The writer role's reply: the paragraph of story prose, without what a model adds around it."""

from __future__ import annotations

import re

from .clean import (
    dedupe_key,
    echoes_instruction,
    is_preface,
    is_title_line,
    prepare,
    strip_enclosing_quotes,
    without_fence_lines,
    without_trailing_commentary,
)
from .json_repair import find_json_field, json_values
from .labels import (
    ALL_LABELS,
    INSTRUCTION_ITEM_NAMES,
    INSTRUCTION_LIST_NAMES,
    MEMORY_NAMES,
    PARAGRAPH_NAMES,
    REASON_NAMES,
    match_label,
)
from .reply_format import ReplyFormat

_PARAGRAPH_KEYS = ("paragraph", "next paragraph", "text", "content", "story", "prose")
# Labels after which a writer's reply is no longer the paragraph. A "Note:" line may be story
# (a character reads a note), so only a decorated one ("**Note:**", "(Note:") ends the prose.
_AFTER_PARAGRAPH_LABELS = frozenset(
    MEMORY_NAMES + REASON_NAMES + INSTRUCTION_ITEM_NAMES + INSTRUCTION_LIST_NAMES
)
_DECORATED_NOTE = re.compile(r"^\s*[(\[*_#]+\s*(?:author'?s\s+)?notes?\b", re.IGNORECASE)
_SEPARATOR_LINE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,}|={3,})\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”’')\]]*\s+")


def clean_paragraph(text: str | None, instruction: str | None = None) -> str:
    """The writer's reply as story prose.

    Drops a reasoning block, code fences, a preface ("Here is the next paragraph:"), a leading
    label ("Paragraph:", "**Paragraph 2:**") or title ("# Chapter 3"), the instruction echoed
    before the prose (labelled, or as `instruction` word for word), trailing talk to the user
    ("Let me know if ..."), and anything from an appended "Short-term memory:" or
    "Instruction 1:" section on. Quotes are removed only when they enclose the whole reply.
    A reply of several paragraphs is kept whole, its paragraphs joined by single newlines
    (blank lines are dropped), since splitting it would lose prose the reader already saw.
    """
    text = prepare(text)
    if not text:
        return ""
    unfenced = without_fence_lines(text).strip()
    if unfenced.startswith("{") or _json_after_preface(unfenced):
        values, _ = json_values(text)
        field = find_json_field(values, _PARAGRAPH_KEYS)
        if field and isinstance(field[1], str):
            text = field[1]
    text = without_trailing_commentary(text, prose=True)
    echo = dedupe_key(instruction or "")
    lines = without_fence_lines(text).split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if not kept and not line.strip():
            continue
        if not kept and is_preface(line):
            continue
        if not kept and echo and echoes_instruction(line, echo):
            continue
        if not kept and is_title_line(line) and any(rest.strip() for rest in lines[index + 1 :]):
            continue
        if kept and _DECORATED_NOTE.match(line):
            break
        section = match_label(line, ALL_LABELS)
        if section is not None:
            if not kept and section.label in PARAGRAPH_NAMES:
                if section.content:
                    kept.append(section.content)
                continue
            if section.label in _AFTER_PARAGRAPH_LABELS and kept:
                break
        kept.append(line)
    while kept and (_SEPARATOR_LINE.match(kept[-1]) or not kept[-1].strip()):
        kept.pop()
    prose = "\n".join(line.strip() for line in kept if line.strip())
    prose = strip_enclosing_quotes(prose).strip()
    if echo and len(echo.split()) >= 4:
        # The instruction restated as the paragraph's first sentence.
        first, _, rest = prose.partition("\n")
        sentences = _SENTENCE_END.split(first, maxsplit=1)
        if len(sentences) == 2 and dedupe_key(sentences[0]) == echo:
            prose = "\n".join(part for part in (sentences[1].strip(), rest) if part)
    return prose


def _json_after_preface(text: str) -> bool:
    first, _, rest = text.partition("\n")
    return is_preface(first) and rest.strip().startswith("{")


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a writer reply, for a repair prompt; None if it reads fully."""
    return None if clean_paragraph(text) else "The reply held no paragraph of prose."


FORMAT = ReplyFormat("writer", None, describe_problem)
