"""What a reader types and what a reader is shown: cleaning free text, phrasing choices.

Pure functions with no UI, so the terminal app, the web sessions and the tests share them.
"""

from __future__ import annotations

import re
import unicodedata

from .reader_errors import InvalidReaderText

DEFAULT_ACTION_CHARS = 500
NAME_CHARS = 40

_ZERO_WIDTH_JOINER = "\u200d"  # kept: it holds multi-part emoji together
_WHITESPACE = re.compile(r"\s+")
# Terminal escape sequences (colours, cursor moves), dropped whole rather than leaving "[31m".
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_])")


def strip_control_characters(text: str) -> str:
    """`text` without control and invisible format characters, on one line.

    Removes C0/C1 controls (escape sequences included) and Unicode format characters such as
    bidirectional overrides and zero-width spaces, which can hide text from the person who
    reads it back; runs of whitespace (newlines too) become one space.
    """
    kept = []
    for character in _ESCAPE_SEQUENCE.sub("", text):
        if character.isspace():
            kept.append(" ")
        elif unicodedata.category(character) in ("Cc", "Cf") and character != _ZERO_WIDTH_JOINER:
            continue
        else:
            kept.append(character)
    return _WHITESPACE.sub(" ", "".join(kept)).strip()


def clean_action(text: str, limit: int = DEFAULT_ACTION_CHARS) -> str:
    """A reader's free-text action, ready to be sent as quoted story content.

    Raises `InvalidReaderText` if nothing is left after cleaning, or if it is longer than `limit`.
    """
    action = strip_control_characters(text)
    if not action:
        raise InvalidReaderText(
            "Your action is empty; nothing was written; type what you do, in a few words."
        )
    if len(action) > limit:
        raise InvalidReaderText(
            f"Your action is {len(action)} characters long, more than the {limit} allowed; "
            "nothing was written; shorten it and try again."
        )
    return action


def clean_reader_name(text: str) -> str:
    """A reader's display name: one line of printable text, at most `NAME_CHARS` long."""
    name = strip_control_characters(text)
    if not name:
        raise InvalidReaderText("The name is empty; nothing was saved; type the name to read under.")
    return name[:NAME_CHARS].strip()


# Lead-ins a planner often puts before the event itself; removing one keeps the meaning and
# leaves a sentence that reads as something that can happen.
_LEAD_IN = re.compile(
    r"^(?:(?:next|then|now|finally)\s*[,:]?\s+)?"
    r"(?:(?:in\s+the\s+next\s+paragraph|next\s+paragraph)\s*[,:]\s*)?"
    r"(?:(?:write|describe|show|narrate|depict|reveal)\s+"
    r"(?:(?:a\s+)?(?:scene|paragraph|moment)\s+)?(?:in\s+which|where|how|that)\s+)?",
    re.IGNORECASE,
)
# "Have Mara confront her brother" -> "Mara will confront her brother": the subject must be
# a run of capitalised names, so that the rewrite never has to guess where it ends.
_HAVE_NAMES = re.compile(
    r"^(?i:have|let|make)\s+(?P<names>[A-Z][a-z]+(?:(?:\s+and\s+|\s+)[A-Z][a-z]+)*)\s+"
    r"(?P<rest>[a-z][a-z]*\b.*)$"
)


def as_reader_choice(instruction: str) -> str:
    """An instruction for the writer, phrased as an option under "What happens next?".

    Only mechanical changes that keep the meaning: lead-ins such as "Next," or "Describe how"
    are dropped, "Have Mara open the door" becomes "Mara will open the door", the first
    letter is capitalised and the closing full stop removed.
    """
    text = strip_control_characters(instruction)
    text = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s+", "", text)  # list numbering
    shortened = _LEAD_IN.sub("", text, count=1)
    if shortened.strip():
        text = shortened.strip()
    match = _HAVE_NAMES.match(text)
    if match:
        text = f"{match.group('names')} will {match.group('rest')}"
    text = text.rstrip(" .")
    return text[:1].upper() + text[1:]


def same_instruction(first: str, second: str) -> bool:
    """Whether two instructions are the same words (case, spacing and end punctuation aside)."""
    return _instruction_key(first) == _instruction_key(second)


def _instruction_key(text: str) -> str:
    return strip_control_characters(text).casefold().rstrip(" .!?")
