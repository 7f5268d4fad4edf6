"""The memory role's reply: the updated short-term memory and the reason for the update."""

from __future__ import annotations

from dataclasses import dataclass

from .bible_updates import SCHEMA as BIBLE_UPDATES_SCHEMA
from .clean import has_words, prepare, without_trailing_commentary
from .json_repair import as_text, find_json_field, json_values
from .labels import MEMORY_NAMES, REASON_NAMES, best_section, sections
from .reply_format import CUT_OFF_PROBLEM, ReplyFormat
from .sentences import trim_to_last_sentence

SCHEMA = {
    "title": "memory_update",
    "type": "object",
    # The reason first: servers that enforce the schema generate keys in this order.
    "properties": {
        "reason": {"type": "string"},
        "short_term_memory": {"type": "string"},
        "bible_updates": BIBLE_UPDATES_SCHEMA,  # optional: a paragraph may teach the bible nothing
    },
    "required": ["reason", "short_term_memory"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class MemoryParse:
    short_term_memory: str | None
    reason: str | None
    truncated: bool = False  # the reply's JSON was cut off and repaired


def parse_memory_update(text: str | None, *, cut_off: bool = False) -> MemoryParse:
    """The updated short-term memory and the model's reason; None where missing.

    `cut_off`: the reply hit the length limit, so its last part is incomplete. A memory that
    was that last part is marked `truncated` and cut back to its last full sentence.
    """
    text = without_trailing_commentary(prepare(text))
    if not text:
        return MemoryParse(None, None)
    values, truncated = json_values(text)
    memory_field = find_json_field(values, MEMORY_NAMES)
    reason_field = find_json_field(values, REASON_NAMES)
    memory = as_text(memory_field[1]) if memory_field else None
    reason = as_text(reason_field[1]) if reason_field else None
    memory_last = False  # whether the memory is the reply's last part (the one a cut hits)
    if memory is None or reason is None:
        leading, labelled = sections(text)
        if labelled:
            memory_last = labelled[-1].label in MEMORY_NAMES
        memory_section = best_section(labelled, MEMORY_NAMES)
        reason_section = best_section(labelled, REASON_NAMES)
        if memory is None and memory_section:
            memory = memory_section.content
        if reason is None and reason_section:
            reason = reason_section.content
        # A summary written first and the reason labelled after it (or a completion prompt
        # that ended with "Short-term memory:"): the unlabelled start is the memory.
        if memory is None and reason_section and not values and has_words(leading):
            memory = leading
    if cut_off and not truncated and not values and memory is not None:
        if memory_last:
            truncated = True
            memory = trim_to_last_sentence(memory)
        elif reason is not None:
            reason = trim_to_last_sentence(reason)
    memory = memory if memory and has_words(memory) else None
    reason = reason if reason and has_words(reason) else None
    return MemoryParse(memory, reason, truncated and memory is not None)


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a memory reply, for a repair prompt; None if it reads fully."""
    memory = parse_memory_update(text, cut_off=cut_off)
    if memory.short_term_memory is None:
        return "The reply had no readable short-term memory."
    if memory.truncated:
        return CUT_OFF_PROBLEM
    if memory.reason is None:
        return "The reply gave no reason for the memory update."
    return None


FORMAT = ReplyFormat("memory", SCHEMA, describe_problem)
