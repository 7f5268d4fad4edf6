"""The chapter_summary role's reply: a closed chapter's one-paragraph summary and a short title.

Also the summary a chapter gets when no model can write one (a prose-only model, or a reply
that could not be read): its opening sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .clean import clean_value, collapse_whitespace, has_words, prepare, without_trailing_commentary
from .json_repair import as_text, find_json_field, json_values
from .labels import TITLE_NAMES, best_section, sections
from .reply_format import CUT_OFF_PROBLEM, ReplyFormat
from .sentences import split_sentences, trim_to_last_sentence

SCHEMA = {
    "title": "chapter_summary",
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["title", "summary"],
    "additionalProperties": False,
}
SUMMARY_NAMES = ("chapter summary", "summary", "synopsis", "recap", "what happens")
_LABELS = frozenset(SUMMARY_NAMES + TITLE_NAMES + ("chapter title",))
MAX_TITLE_WORDS = 10
# A summary made from the chapter's opening sentences stops after about this many words.
OPENING_SUMMARY_WORDS = 60


@dataclass(frozen=True)
class ChapterSummaryParse:
    summary: str | None
    title: str | None
    truncated: bool = False  # cut off by the length limit (and cut back to its last sentence)


def parse_chapter_summary(text: str | None, *, cut_off: bool = False) -> ChapterSummaryParse:
    """The summary and title of a chapter_summary reply; either may be None. Plain prose with
    no labels is the summary itself."""
    text = without_trailing_commentary(prepare(text))
    if not text:
        return ChapterSummaryParse(None, None)
    values, truncated = json_values(text)
    summary_field = find_json_field(values, SUMMARY_NAMES)
    title_field = find_json_field(values, ("chapter title", *TITLE_NAMES))
    summary = as_text(summary_field[1]) if summary_field else None
    title = as_text(title_field[1]) if title_field else None
    if not values:
        leading, labelled = sections(text, _LABELS)
        summary_section = best_section(labelled, SUMMARY_NAMES)
        title_section = best_section(labelled, ("chapter title", *TITLE_NAMES))
        summary = summary_section.content if summary_section else None
        title = title_section.content if title_section else None
        if summary is None and not labelled and _reads_as_summary(leading):
            summary = leading  # prose alone: the summary, as a base model after "Summary:" writes it
    if cut_off and not truncated and summary:
        trimmed = trim_to_last_sentence(summary)
        truncated = trimmed != summary
        summary = trimmed
    summary = collapse_whitespace(summary) if summary and has_words(summary) else None
    return ChapterSummaryParse(summary, _clean_title(title), truncated and summary is not None)


# Prose alone that is the model talking, not a summary: "I'm sorry...", "Here you go", "As an AI".
_NOT_A_SUMMARY = re.compile(r"^\W*(?:i\b|i'm\b|i’m\b|sorry\b|as an ai\b|here\b|sure\b|certainly\b)", re.IGNORECASE)
SHORTEST_SUMMARY_WORDS = 4


def _reads_as_summary(text: str) -> bool:
    return len(text.split()) >= SHORTEST_SUMMARY_WORDS and not _NOT_A_SUMMARY.match(text)


def _clean_title(title: str | None) -> str | None:
    if not title:
        return None
    first_line = next((line for line in title.split("\n") if has_words(line)), "")
    words = clean_value(first_line.lstrip("# ")).strip("\"“”'").split()
    return " ".join(words[:MAX_TITLE_WORDS]).rstrip(".,;:") or None


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a chapter_summary reply, for a repair prompt; None if it reads fully."""
    parsed = parse_chapter_summary(text, cut_off=cut_off)
    if parsed.summary is None:
        return "The reply had no readable summary."
    if parsed.truncated:
        return CUT_OFF_PROBLEM
    return None


FORMAT = ReplyFormat("chapter_summary", SCHEMA, describe_problem)


def summary_from_opening(paragraphs: Sequence[str], words: int = OPENING_SUMMARY_WORDS) -> str:
    """The chapter's opening sentences, about `words` words of them (at least one sentence)."""
    kept: list[str] = []
    count = 0
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            if kept and count + len(sentence.split()) > words:
                return " ".join(kept)
            kept.append(sentence)
            count += len(sentence.split())
    return " ".join(kept)
