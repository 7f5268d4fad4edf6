"""Bible updates carried by the memory role's reply: new entries, new facts, facts that end.

The memory role reads the new paragraph anyway, so it is the one asked what the paragraph
taught about the story bible. Its reply may hold, beside the memory:

    "bible_updates": {
      "new_entries": [{"name", "kind", "aliases", "description"}],
      "new_facts": [{"entry", "text"}],
      "ended_facts": [{"entry", "fact_id", "text"}]
    }

Reading never raises: an item that cannot be read becomes a `DroppedUpdate` with one sentence
saying why, and the rest is kept. `recurrent_core.bible_proposals` then checks the items
against the bible as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import DroppedUpdate
from .clean import prepare
from .json_repair import find_json_field, json_values

# Keys as `normalise_label` reads them: lowercase words.
UPDATES_NAMES = ("bible updates", "bible update", "story bible updates", "bible")
NEW_ENTRIES_NAMES = ("new entries", "entries", "new entry")
NEW_FACTS_NAMES = ("new facts", "facts", "new fact")
ENDED_FACTS_NAMES = ("ended facts", "ended", "ended fact", "facts ended", "no longer true")

_TEXT = {"type": "string"}
SCHEMA = {
    "type": "object",
    "title": "bible_updates",
    "properties": {
        "new_entries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": _TEXT,
                    "kind": {"type": "string", "enum": ["character", "place", "object", "group", "lore", "rule"]},
                    "aliases": {"type": "array", "items": _TEXT},
                    "description": _TEXT,
                },
                "required": ["name", "kind"],
            },
        },
        "new_facts": {
            "type": "array",
            "items": {"type": "object", "properties": {"entry": _TEXT, "text": _TEXT}, "required": ["entry", "text"]},
        },
        "ended_facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"entry": _TEXT, "fact_id": _TEXT, "text": _TEXT},
                "required": ["entry"],
            },
        },
    },
}
"""The `bible_updates` property of the memory role's JSON schema (optional there)."""


@dataclass(frozen=True)
class NewEntryItem:
    name: str
    kind: str
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class NewFactItem:
    entry: str
    text: str


@dataclass(frozen=True)
class EndedFactItem:
    entry: str
    fact_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class ParsedBibleUpdates:
    new_entries: tuple[NewEntryItem, ...] = ()
    new_facts: tuple[NewFactItem, ...] = ()
    ended_facts: tuple[EndedFactItem, ...] = ()
    dropped: tuple[DroppedUpdate, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.new_entries or self.new_facts or self.ended_facts or self.dropped)


def parse_bible_updates(text: str | None) -> ParsedBibleUpdates:
    """The bible updates in a memory reply; empty when it has none (labelled text has none)."""
    text = prepare(text)
    if not text:
        return ParsedBibleUpdates()
    values, _truncated = json_values(text)
    found = find_json_field(values, UPDATES_NAMES)
    if found is None or not isinstance(found[1], dict):
        return ParsedBibleUpdates()
    updates = found[1]
    dropped: list[DroppedUpdate] = []
    entries = [_new_entry(item, dropped) for item in _items(updates, NEW_ENTRIES_NAMES)]
    facts = [_new_fact(item, dropped) for item in _items(updates, NEW_FACTS_NAMES)]
    ended = [_ended_fact(item, dropped) for item in _items(updates, ENDED_FACTS_NAMES)]
    return ParsedBibleUpdates(
        tuple(item for item in entries if item), tuple(item for item in facts if item),
        tuple(item for item in ended if item), tuple(dropped),
    )


def _items(updates: dict, names: tuple[str, ...]) -> list[object]:
    found = find_json_field([updates], names)
    if found is None:
        return []
    value = found[1]
    return value if isinstance(value, list) else [value]


def _text(item: dict, *keys: str) -> str:
    for key in keys:
        value = item.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return " ".join(str(value).split())
    return ""


def _new_entry(item: object, dropped: list[DroppedUpdate]) -> NewEntryItem | None:
    if not isinstance(item, dict):
        dropped.append(DroppedUpdate(repr(item)[:80], "A proposed entry was not an object with a name and kind, so it was dropped."))
        return None
    name = _text(item, "name", "entry")
    if not name:
        dropped.append(DroppedUpdate(repr(item)[:80], "A proposed entry had no name, so it was dropped."))
        return None
    aliases = item.get("aliases") or ()
    aliases = (aliases,) if isinstance(aliases, str) else aliases
    return NewEntryItem(
        name, _text(item, "kind", "type").casefold(),
        tuple(" ".join(str(alias).split()) for alias in aliases if isinstance(alias, str) and alias.strip()),
        _text(item, "description", "summary"),
    )


def _new_fact(item: object, dropped: list[DroppedUpdate]) -> NewFactItem | None:
    if isinstance(item, dict):
        entry, text = _text(item, "entry", "entry_name", "name"), _text(item, "text", "fact")
    else:
        entry, text = "", _text({"text": item}, "text")
    if not text:
        dropped.append(DroppedUpdate(repr(item)[:80], "A proposed fact had no text, so it was dropped."))
        return None
    if not entry:
        dropped.append(DroppedUpdate(text, f"The proposed fact {text!r} named no entry, so it was dropped."))
        return None
    return NewFactItem(entry, text)


def _ended_fact(item: object, dropped: list[DroppedUpdate]) -> EndedFactItem | None:
    if not isinstance(item, dict):
        dropped.append(DroppedUpdate(repr(item)[:80], "A proposed end of a fact named no entry, so it was dropped."))
        return None
    entry = _text(item, "entry", "entry_name", "name")
    fact_id, text = _text(item, "fact_id", "id"), _text(item, "text", "fact")
    if not entry or not (fact_id or text):
        what = text or fact_id or repr(item)[:80]
        dropped.append(DroppedUpdate(what, f"A proposed end of a fact ({what}) did not name both the entry and the fact, so it was dropped."))
        return None
    return EndedFactItem(entry, fact_id, text)
