"""The opening role's reply, which opens a story: its title and its outline.

Also the title a premise gives, for when the model writes none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .clean import clean_block, clean_value, has_words, normalise_label, prepare, without_trailing_commentary
from .json_repair import as_text, dicts_breadth_first, find_json_field, json_values
from .labels import OPENING_LABELS, OUTLINE_NAMES, OUTLINE_PART_NAMES, TITLE_NAMES, best_section, sections
from .reply_format import CUT_OFF_PROBLEM, ReplyFormat
from .sentences import ends_mid_sentence, trim_to_last_sentence

SCHEMA = {
    "title": "title_and_outline",
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "outline": {"type": "string"},
    },
    "required": ["title", "outline"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class OpeningParse:
    title: str | None
    outline: str | None
    truncated: bool = False  # the reply's JSON was cut off and repaired


def parse_opening(text: str | None, *, cut_off: bool = False) -> OpeningParse:
    """The title and outline of an opening reply; either may be None.

    `cut_off`: the reply hit the length limit; an outline that stops mid-sentence is cut back
    to its last full sentence and the parse is marked `truncated`.
    """
    text = without_trailing_commentary(prepare(text))
    if not text:
        return OpeningParse(None, None)
    values, truncated = json_values(text)
    title = outline = None
    title_field = find_json_field(values, TITLE_NAMES)
    if title_field:
        title = _clean_title(as_text(title_field[1]) or "")
    outline_field = find_json_field(values, OUTLINE_NAMES)
    if outline_field:
        outline = as_text(outline_field[1])
    elif title_field:
        # No outline key: the other keys (setting, characters, arc ...) are the outline.
        for mapping in dicts_breadth_first(values):
            if title_field[0] in {normalise_label(str(k)) for k in mapping}:
                rest = {k: v for k, v in mapping.items() if normalise_label(str(k)) not in TITLE_NAMES}
                outline = as_text(rest)
                break
    if title is None or outline is None:
        label_title, label_outline = _opening_from_labels(text, from_json=bool(values))
        title = title or label_title
        outline = outline or label_outline
    if cut_off and not truncated and outline and ends_mid_sentence(outline):
        outline, truncated = trim_to_last_sentence(outline), True
    return OpeningParse(title or None, outline or None, truncated)


MAX_TITLE_WORDS = 12
MAX_TITLE_CHARS = 90


def _short_title(title: str) -> str:
    """A title a model let run on, cut to its first clause or its first words."""
    if len(title) <= MAX_TITLE_CHARS and len(title.split()) <= MAX_TITLE_WORDS:
        return title
    clause = re.split(r"[,.;:!?()—–]|\s-\s", title, maxsplit=1)[0].strip()
    if 2 <= len(clause.split()) <= MAX_TITLE_WORDS and len(clause) <= MAX_TITLE_CHARS:
        return clause
    words = title.split()[:MAX_TITLE_WORDS]
    while len(" ".join(words)) > MAX_TITLE_CHARS and len(words) > 1:
        words.pop()
    while len(words) > 2 and words[-1].lower().rstrip(".,;:!?") in _TITLE_TRAILING_WORDS:
        words.pop()
    return " ".join(words).rstrip(".,;:!?—–- ")[:MAX_TITLE_CHARS]


def _clean_title(text: str) -> str | None:
    first_line = next((line for line in text.split("\n") if has_words(line)), "")
    title = _short_title(clean_value(first_line.lstrip("# ")))
    return title if has_words(title) else None


def _opening_from_labels(text: str, *, from_json: bool) -> tuple[str | None, str | None]:
    _, labelled = sections(text, OPENING_LABELS)
    title_section = best_section(labelled, TITLE_NAMES)
    title = _clean_title(title_section.content) if title_section else None
    if title is None and not from_json:
        heading = re.match(r"\s*#{1,3}[ \t]+(.+)", text)  # "# The Glass Orchard"
        if heading and normalise_label(heading.group(1)) not in OPENING_LABELS:
            title = _clean_title(heading.group(1))
    outline_section = best_section(labelled, OUTLINE_NAMES)
    if outline_section:
        return title, outline_section.content
    if from_json:
        return title, None
    # No outline label: separate "Setting:", "Characters:", "Arc:" parts make the outline.
    _, part_sections = sections(text, OPENING_LABELS | frozenset(OUTLINE_PART_NAMES))
    parts = [s for s in part_sections if s.label in OUTLINE_PART_NAMES and has_words(s.content)]
    if parts:
        outline = "\n".join(f"{s.label.capitalize()}: {s.content}" for s in parts)
        return title, outline
    if title is not None:
        # Whatever follows the title, unlabelled, is the outline.
        body = [s.content for s in labelled if s.label not in TITLE_NAMES and has_words(s.content)]
        rest = "\n".join(body) if body else ""
        if not rest and title_section is not None:
            rest = "\n".join(title_section.content.split("\n")[1:]).strip()
        if not rest and title_section is None:
            rest = "\n".join(text.split("\n")[1:]).strip()
        return title, clean_block(rest) or None
    return title, None


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with an opening reply, for a repair prompt; None if it reads fully."""
    opening = parse_opening(text, cut_off=cut_off)
    if opening.title is None and opening.outline is None:
        return "The reply had neither a readable title nor an outline."
    if opening.title is None:
        return "The reply had no readable title."
    if opening.outline is None:
        return "The reply had no readable outline."
    if opening.truncated:
        return CUT_OFF_PROBLEM
    return None


FORMAT = ReplyFormat("opening", SCHEMA, describe_problem)


# Words a title does not end on ("A fox learns to read and" reads as cut off).
_TITLE_TRAILING_WORDS = frozenset(
    "a an the and or but nor so to of in on at by for from with as that who which whose when "
    "where while into onto his her its their my your our".split()
)


def title_from_premise(premise: str) -> str:
    """The premise's first clause (unless it is a name alone), up to eight words, not ending on
    "and", "the" and the like."""
    premise = re.sub(r"[\"“”]", "", premise).strip()
    first_clause = re.split(r"[.,;:!?()—–]|\s-\s", premise, maxsplit=1)[0]
    words = (first_clause if len(first_clause.split()) >= 3 else premise).split()[:8]
    while len(words) > 2 and words[-1].lower().rstrip(".,;:!?") in _TITLE_TRAILING_WORDS:
        words.pop()
    title = " ".join(words).rstrip(".,;:!?—–- ")
    return title[:1].upper() + title[1:] if title else "Untitled"
