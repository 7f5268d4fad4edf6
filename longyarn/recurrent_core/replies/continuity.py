"""The continuity role's reply: the paragraph's sentences that contradict facts in force.

Each item names a fact (by the start of its id, or its text), the sentence, and why; the
engine matches them back to the facts it sent (`recurrent_core.continuity`). Reading never
raises: an item without a sentence, or naming no fact, is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clean import prepare
from .json_repair import find_json_field, json_values
from .reply_format import ReplyFormat

_TEXT = {"type": "string"}
SCHEMA = {
    "title": "continuity_check",
    "type": "object",
    "properties": {
        "contradictions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"fact_id": _TEXT, "fact": _TEXT, "sentence": _TEXT, "explanation": _TEXT},
                "required": ["fact_id", "fact", "sentence", "explanation"],
            },
        },
    },
    "required": ["contradictions"],
    "additionalProperties": False,
}

# Keys as `normalise_label` reads them: lowercase words.
_LIST_NAMES = ("contradictions", "contradiction", "conflicts", "problems", "issues")
_NONE_SAID = ("none", "no contradictions", "nothing", "[]")


@dataclass(frozen=True)
class ContradictionItem:
    fact_id: str
    fact: str
    sentence: str
    explanation: str


def parse_contradictions(text: str | None) -> list[ContradictionItem] | None:
    """The contradictions a continuity reply names ([] for none); None if it could not be read."""
    text = prepare(text)
    if not text:
        return None
    values, _ = json_values(text)
    found = find_json_field(values, _LIST_NAMES)
    if found is None:
        if values and isinstance(values[0], list):  # a bare list of items
            found = ("contradictions", values[0])
        elif text.strip().strip(".").casefold() in _NONE_SAID:
            return []
        else:
            return None
    items = found[1] if isinstance(found[1], list) else [found[1]]
    kept = []
    for item in items:
        if not isinstance(item, dict):
            continue
        fields = {key: " ".join(str(item.get(key) or "").split()) for key in ("fact_id", "fact", "sentence", "explanation")}
        fields["fact_id"] = fields["fact_id"] or " ".join(str(item.get("id") or "").split())
        if fields["sentence"] and (fields["fact_id"] or fields["fact"]):
            kept.append(ContradictionItem(**fields))
    return kept


def describe_problem(text: str, *, cut_off: bool = False) -> str | None:
    """What is wrong with a continuity reply, for a repair prompt; None if it reads fully."""
    if parse_contradictions(text) is None:
        return 'The reply had no "contradictions" list; reply {"contradictions": []} when there are none.'
    return None


FORMAT = ReplyFormat("continuity", SCHEMA, describe_problem)
