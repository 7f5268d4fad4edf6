"""The planner role's reply: candidate next instructions, however the model lists them.

Lists are numbered in every way ("1.", "2)", "- ", "Instruction 3:", "Option B:"), given as
JSON (a list, a list of objects, numbered keys) or as titled items with descriptions.
"""

from __future__ import annotations

import re
from typing import Iterable

from .clean import (
    clean_value,
    dedupe_key,
    has_words,
    is_bold_title,
    looks_like_title,
    normalise_label,
    prepare,
    without_fence_lines,
    without_trailing_commentary,
)
from .json_repair import as_text, dicts_breadth_first, find_json_field, json_values
from .labels import (
    ALL_LABELS,
    INSTRUCTION_ITEM_NAMES,
    INSTRUCTION_LIST_NAMES,
    LETTER_NUMBERS,
    match_label,
    sections,
)
from .reply_format import CUT_OFF_PROBLEM, ReplyFormat
from .sentences import ends_mid_sentence

SCHEMA = {
    "title": "next_instructions",
    "type": "object",
    "properties": {
        "instructions": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 3,
            "maxItems": 3,
        },
    },
    "required": ["instructions"],
    "additionalProperties": False,
}

_LIST_ITEM = re.compile(
    r"^[ \t]*(?P<heading>\#{1,6}[ \t]*)?(?:\*\*|__)?"
    r"(?:[-*+•▪]|\(?\d{1,2}[.):]|\(?[A-Ca-c][.)]|\#\d{1,2}[.:]?)(?:\*\*|__)?[ \t]+(?P<item>\S.*)$"
)
_INSTRUCTION_ITEM_KEYS = ("instruction", "direction", "text", "description", "content", "plan")


def parse_instructions(text: str | None, *, cut_off: bool = False) -> list[str]:
    """The candidate instructions in a planner reply: cleaned, de-duplicated, in order.

    May return fewer or more than three; `resolve_step_outputs` makes it exactly three.
    `cut_off`: the reply hit the length limit, so a last item that stops mid-sentence is
    half an instruction and is dropped.
    """
    text = without_trailing_commentary(prepare(text))
    if not text:
        return []
    values, _ = json_values(text)
    items = _instructions_from_json(values) if values else []
    from_json = bool(items)  # a repaired JSON list has already lost its half-written item
    if not items:
        items = _instructions_from_labels(text)
    if not items:
        items = _list_items(text)
    if not items and not values:
        # Plain lines, one per instruction; a preface ("Here are three options:") ends in ':'.
        items = [
            line for line in text.split("\n")
            if len(line.split()) >= 3
            and not line.rstrip().endswith(":")
            and not line.lstrip().startswith(("{", "[", "```"))
            and match_label(line, ALL_LABELS) is None
        ]
    if cut_off and not from_json and items and ends_mid_sentence(items[-1]):
        items = items[:-1]
    return _unique_instructions(items)


def _unique_instructions(items: Iterable[str]) -> list[str]:
    unique: dict[str, str] = {}
    for item in items:
        cleaned = clean_value(re.sub(r"^\s*(?:\d{1,2}[.)]|[-*+•])\s+", "", item))
        key = dedupe_key(cleaned)
        if key and has_words(cleaned) and key not in unique:
            unique[key] = cleaned
    return list(unique.values())


def _instructions_from_json(values: list[object]) -> list[str]:
    for value in values:
        if isinstance(value, list):
            items = _json_list_items(value)
            if items:
                return items
    field = find_json_field(values, INSTRUCTION_LIST_NAMES)
    if field is not None:
        if isinstance(field[1], list):
            return _json_list_items(field[1])
        if isinstance(field[1], str):
            return _instructions_from_labels(field[1]) or _list_items(field[1]) or [field[1]]
    # {"instruction_1": ..., "instruction_2": ...} or {"option A": ...}
    for mapping in dicts_breadth_first(values):
        numbered = []
        for key, item in mapping.items():
            match = re.fullmatch(r"([a-z ]+?) ?(\d{1,2}|[abc])", normalise_label(str(key)))
            if match and match.group(1) in INSTRUCTION_ITEM_NAMES and as_text(item):
                numbered.append(as_text(item).replace("\n", " "))
        if numbered:
            return numbered
    return []


def _json_list_items(items: list[object]) -> list[str]:
    texts = []
    for item in items:
        if isinstance(item, dict):
            field = find_json_field([item], _INSTRUCTION_ITEM_KEYS)
            text = as_text(field[1]) if field else as_text(item)
        else:
            text = as_text(item)
        if text:
            texts.append(text.replace("\n", " "))
    return texts


def _instructions_from_labels(text: str) -> list[str]:
    leading, labelled = sections(text)
    item_sections = [s for s in labelled if s.label in INSTRUCTION_ITEM_NAMES]
    items = [_join_item_lines(s.content) for s in item_sections if has_words(s.content)]
    if item_sections and has_words(leading):
        first_number = item_sections[0].number or ""
        if LETTER_NUMBERS.get(first_number.lower(), first_number) == "2":
            # The reply continued a prompt that ended with "Instruction 1:".
            items.insert(0, leading.replace("\n", " "))
    if items:
        return items
    for section in labelled:
        if section.label in INSTRUCTION_LIST_NAMES and has_words(section.content):
            listed = _list_items(section.content)
            if listed:
                return listed
            return [line for line in section.content.split("\n") if has_words(line)]
    return []


def _list_items(text: str) -> list[str]:
    """Numbered or bulleted list items; an item's wrapped lines join it.

    An item that is only a title ("### 1. The Storm", "1. **The Storm**") takes the lines
    below it, indented or not, as its description: "The Storm: Mara ...".
    """
    items: list[list[str]] = []
    continuing = titled = False
    for line in without_fence_lines(text).split("\n"):
        match = _LIST_ITEM.match(line)
        if match:
            item = match.group("item")
            titled = bool(match.group("heading")) or is_bold_title(item)
            items.append([item])
            continuing = True
        elif not line.strip():
            # A blank line between a title and its description does not end the item.
            continuing = continuing and titled and len(items[-1]) == 1
        elif continuing and (line[:1] in " \t" or titled):
            items[-1].append(line.strip())
        else:
            continuing = False
    return [_join_item_lines("\n".join(lines)) for lines in items]


def _join_item_lines(text: str) -> str:
    """One instruction from its lines: "Title: description" when the first line is a title."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if len(lines) > 1 and looks_like_title(lines[0]):
        title = clean_value(lines[0]).rstrip(":：").strip()
        return f"{title}: {' '.join(lines[1:])}"
    return " ".join(lines)


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a planner reply, for a repair prompt; None if it reads fully."""
    count = len(parse_instructions(text, cut_off=cut_off))
    if count == 0 and cut_off:
        return CUT_OFF_PROBLEM
    if count == 0:
        return "The reply had no readable instructions."
    if count < 3:
        plural = "s" if count > 1 else ""
        return f"The reply had only {count} distinct instruction{plural}; three are needed."
    return None


FORMAT = ReplyFormat("planner", SCHEMA, describe_problem)
