"""The chooser role's reply: which of the three instructions it picked."""

from __future__ import annotations

import re

from .clean import prepare
from .json_repair import find_json_field, json_values
from .labels import LETTER_NUMBERS
from .reply_format import ReplyFormat

SCHEMA = {
    "title": "instruction_choice",
    "type": "object",
    "properties": {"choice": {"type": "integer", "minimum": 1, "maximum": 3}},
    "required": ["choice"],
    "additionalProperties": False,
}

_CHOICE_KEYS = ("choice", "chosen", "selection", "answer", "option", "instruction")
_LABELLED_CHOICE = re.compile(
    r"\b(?:choice|option|instruction|direction|number)\s*#?\s*([1-9]|[abc]\b)", re.IGNORECASE
)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "one": 1, "two": 2, "three": 3}


def parse_choice(text: str | None) -> int | None:
    """Which instruction (1-based) a chooser reply picked, or None if it names none."""
    text = prepare(text)
    if not text:
        return None
    values, _ = json_values(text)
    field = find_json_field(values, _CHOICE_KEYS)
    if field is not None:
        found = re.search(r"\d+", str(field[1]))
        if found:
            return int(found.group())
    labelled = _LABELLED_CHOICE.search(text)
    if labelled:
        token = labelled.group(1).lower()
        return int(LETTER_NUMBERS.get(token, token))
    digit = re.search(r"(?<![\d.])([1-9])(?![\d.]\d)", text)
    if digit:
        return int(digit.group(1))
    word = re.search(r"\b(first|second|third|one|two|three)\b", text, re.I)
    return _ORDINALS[word.group(1).lower()] if word else None


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a chooser reply, for a repair prompt; None if it reads fully."""
    choice = parse_choice(text)
    return None if choice in (1, 2, 3) else "The reply did not name a choice of 1, 2 or 3."


FORMAT = ReplyFormat("chooser", SCHEMA, describe_problem)
