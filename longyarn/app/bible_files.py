"""A story bible as text and as JSON files: the listing people read, longyarn's own file format,
and the World Info and lorebook files writers bring from SillyTavern and NovelAI.

longyarn's format: {"format": "longyarn-bible", "version": 1, "story": {"id", "title"},
"entries": [{"name", "kind", "aliases", "secondary_keys", "description", "notes", "always",
"facts": [{"text", "from", "until"}]}]}. Reading any file either yields every entry or raises
one `BibleError` sentence; nothing is stored here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longyarn.recurrent_core.bible import (
    FACT_ID_SHOWN,
    BibleEntry,
    BibleFact,
    EntryDraft,
    FactDraft,
    check_draft,
    clean_keys,
    facts_by_entry,
    name_key,
)
from longyarn.recurrent_core.errors import BibleError
from longyarn.recurrent_core.types import Story

FORMAT = "longyarn-bible"
VERSION = 1
KIND_HEADINGS = {
    "character": "Characters", "place": "Places", "object": "Objects",
    "group": "Groups", "lore": "Lore", "rule": "Rules",
}
FOREIGN_KIND = "lore"  # other tools' entries carry no kind


# ---- out: JSON and text -------------------------------------------------------------------


def fact_json(fact: BibleFact, *, ids: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {"text": fact.text, "from": fact.from_paragraph, "until": fact.until_paragraph}
    return {"id": fact.id, **document, "step_id": fact.step_id} if ids else document


def entry_json(entry: BibleEntry, facts: Iterable[BibleFact], *, ids: bool = False) -> dict[str, Any]:
    """One entry with its facts, as `list --format json`, `export` and a story's JSON hold it."""
    document = {
        "name": entry.name,
        "kind": entry.kind,
        "aliases": list(entry.aliases),
        "secondary_keys": list(entry.secondary_keys),
        "description": entry.description,
        "notes": entry.notes,
        "always": entry.always,
        "facts": [fact_json(fact, ids=ids) for fact in facts],
    }
    return {"id": entry.id, **document} if ids else document


def entries_json(
    entries: Iterable[BibleEntry], facts: Iterable[BibleFact], *, ids: bool = False
) -> list[dict[str, Any]]:
    grouped = facts_by_entry(facts)
    return [entry_json(entry, grouped.get(entry.id, ()), ids=ids) for entry in entries]


def bible_document(story: Story, entries: Iterable[BibleEntry], facts: Iterable[BibleFact]) -> dict[str, Any]:
    """The file `bible ID export` writes and `bible ID import` reads back."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "story": {"id": story.id, "title": story.title},
        "entries": entries_json(entries, facts),
    }


def paragraph_range(fact: BibleFact) -> str:
    if fact.until_paragraph is None:
        return f"from paragraph {fact.from_paragraph}"
    if fact.until_paragraph == fact.from_paragraph:
        return f"paragraph {fact.from_paragraph}"
    return f"paragraphs {fact.from_paragraph}-{fact.until_paragraph}"


def bible_text(story: Story, paragraphs: int, entries: list[BibleEntry], facts: list[BibleFact]) -> str:
    """The bible as people read it: entries by kind, each with aliases, keys, text and facts."""
    where = f"at paragraph {paragraphs}" if paragraphs else "before the first paragraph"
    count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    lines = [f"Story bible of {story.title!r} ({story.id}), {where}: {count}"]
    grouped = facts_by_entry(facts)
    kind = None
    for entry in entries:
        if entry.kind != kind:
            kind = entry.kind
            lines += ["", KIND_HEADINGS.get(kind, kind.title())]
        lines.append(f"  {entry.name}" + ("  [always]" if entry.always else ""))
        if entry.aliases:
            lines.append(f"    also: {', '.join(entry.aliases)}")
        if entry.secondary_keys:
            lines.append(f"    keys: {', '.join(entry.secondary_keys)}")
        lines += [f"    {line}" for line in entry.description.splitlines() if line.strip()]
        if entry.notes:
            lines.append(f"    notes: {' '.join(entry.notes.split())}")
        for fact in grouped.get(entry.id, ()):
            learned = "  (learned)" if fact.step_id else ""
            lines.append(f"    - [{fact.id[:FACT_ID_SHOWN]}] {paragraph_range(fact)}: {fact.text}{learned}")
    return "\n".join(lines) + "\n"


# ---- in: our files and other tools' --------------------------------------------------------


@dataclass(frozen=True)
class ImportedBible:
    """What a file held: its entries as drafts, what kind of file it was, and what was dropped."""

    drafts: list[EntryDraft]
    source: str  # e.g. "a longyarn bible", "SillyTavern World Info"
    dropped_keys: tuple[str, ...] = ()  # keys two entries shared, kept on the first only


def read_bible_file(path: Path) -> ImportedBible:
    """The entries in a longyarn bible, a SillyTavern World Info file (or a character card's
    book) or a NovelAI lorebook; `BibleError` if the file is none of these."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise BibleError(
            f"{path} is not a text file, so nothing was imported; import a bible exported by "
            "longyarn (`longyarn bible ID export`), SillyTavern or NovelAI."
        ) from None
    except json.JSONDecodeError as error:
        raise BibleError(
            f"{path} is not JSON ({error.msg} at line {error.lineno}), so nothing was imported; "
            "import a bible exported by longyarn (`longyarn bible ID export`), SillyTavern or NovelAI."
        ) from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return ImportedBible(_our_entries(data, path), "a longyarn bible")
    world_info = _world_info_entries(data)
    if world_info is not None:
        drafts, dropped = _apart([_world_info_draft(index, raw) for index, raw in world_info])
        return ImportedBible(drafts, "SillyTavern World Info", dropped)
    if isinstance(data, dict) and "lorebookVersion" in data and isinstance(data.get("entries"), list):
        raw_entries = [raw for raw in data["entries"] if isinstance(raw, dict)]
        drafts, dropped = _apart([_novelai_draft(index, raw) for index, raw in enumerate(raw_entries)])
        return ImportedBible(drafts, "a NovelAI lorebook", dropped)
    raise BibleError(
        f'{path} is not a longyarn bible (it has no "format": "{FORMAT}"), nor a SillyTavern World '
        "Info or NovelAI lorebook file, so nothing was imported; export a bible with "
        "`longyarn bible ID export` to see the format."
    )


def _our_entries(data: dict, path: Path) -> list[EntryDraft]:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BibleError(
            f'{path} has no version number ("version": {VERSION}), so nothing was imported; '
            "export the bible again with `longyarn bible ID export`."
        )
    if version > VERSION:
        raise BibleError(
            f"{path} is a version {version} bible, newer than this longyarn reads ({VERSION}), so "
            "nothing was imported; upgrade longyarn, or export it again with this version."
        )
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise BibleError(
            f'{path} has no list of "entries", so nothing was imported; '
            "export the bible again with `longyarn bible ID export`."
        )
    return [_our_draft(number, raw, path) for number, raw in enumerate(entries, start=1)]


def _our_draft(number: int, raw: object, path: Path) -> EntryDraft:
    where = f"Entry {number} of {path}"
    if not isinstance(raw, dict):
        raise BibleError(f"{where} is not an object, so nothing was imported; fix it and import the file again.")
    facts = raw.get("facts", [])
    if not isinstance(facts, list) or not all(isinstance(fact, dict) for fact in facts):
        raise BibleError(
            f'{where} has "facts" that are not a list of objects, so nothing was imported; '
            "fix it and import the file again."
        )
    draft = EntryDraft(
        name=_text(raw, "name", where),
        kind=_text(raw, "kind", where),
        aliases=_texts(raw, "aliases", where),
        secondary_keys=_texts(raw, "secondary_keys", where),
        description=_text(raw, "description", where, ""),
        notes=_text(raw, "notes", where, ""),
        always=raw.get("always") is True,
        facts=tuple(
            FactDraft(_text(fact, "text", where), _number(fact, "from", where, 1), _number(fact, "until", where, None))
            for fact in facts
        ),
    )
    try:
        return check_draft(draft)
    except BibleError as error:  # say which entry: "Entry 3 of FILE (Mara): a fact cannot ..."
        message = str(error)
        raise BibleError(f"{where} ({draft.name.strip() or 'no name'}): {message[0].lower()}{message[1:]}") from None


def _text(raw: dict, key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        wanted = "is missing" if value is None else "is not text"
        raise BibleError(f'{where}: its "{key}" {wanted}, so nothing was imported; fix it and import the file again.')
    return value


def _texts(raw: dict, key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BibleError(
            f'{where}: its "{key}" is not a list of text, so nothing was imported; fix it and import the file again.'
        )
    return tuple(value)


def _number(raw: dict, key: str, where: str, default: int | None) -> Any:
    value = raw.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BibleError(
            f'{where}: a fact\'s "{key}" is not a paragraph number, so nothing was imported; '
            "fix it and import the file again."
        )
    return value


def _world_info_entries(data: object) -> list[tuple[int, dict]] | None:
    """SillyTavern's entries (a World Info file's {"entries": {"0": {...}}} or a character
    card's book: {"entries": [...]}, maybe under "data"/"character_book"); None if not one."""
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if isinstance(data, dict) and isinstance(data.get("character_book"), dict):
        data = data["character_book"]
    entries = data.get("entries") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        raw = [entry for entry in entries.values() if isinstance(entry, dict)]
    elif isinstance(entries, list) and not (isinstance(data, dict) and "lorebookVersion" in data):
        raw = [entry for entry in entries if isinstance(entry, dict)]
    else:
        return None
    if not raw or not all("content" in entry and ("key" in entry or "keys" in entry) for entry in raw):
        return None
    return sorted(enumerate(raw), key=lambda item: _order(item[1], item[0]))


def _order(entry: dict, index: int) -> tuple[float, int]:
    shown = entry.get("displayIndex", entry.get("uid", entry.get("id", index)))
    return (shown if isinstance(shown, (int, float)) and not isinstance(shown, bool) else index), index


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [part for part in value.split(",")]
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _world_info_draft(index: int, raw: dict) -> EntryDraft:
    keys = _strings(raw.get("key", raw.get("keys")))
    title = next(
        (raw[field] for field in ("comment", "name") if isinstance(raw.get(field), str) and raw[field].strip()),
        "",
    )
    name = title or next((key for key in keys if key.strip()), "") or f"Entry {raw.get('uid', index)}"
    disabled = raw.get("disable") is True or raw.get("enabled") is False
    return EntryDraft(
        name=name,
        kind=FOREIGN_KIND,
        aliases=clean_keys(keys, name),
        secondary_keys=clean_keys(_strings(raw.get("keysecondary", raw.get("secondary_keys")))),
        description=str(raw.get("content") or "").strip(),
        notes="Disabled in SillyTavern." if disabled else "",
        always=raw.get("constant") is True,
    )


def _novelai_draft(index: int, raw: dict) -> EntryDraft:
    keys = _strings(raw.get("keys"))
    display = raw.get("displayName")
    name = (display if isinstance(display, str) and display.strip() else "") or next(
        (key for key in keys if key.strip()), f"Entry {index + 1}"
    )
    return EntryDraft(
        name=name,
        kind=FOREIGN_KIND,
        aliases=clean_keys(keys, name),
        description=str(raw.get("text") or "").strip(),
        notes="Disabled in NovelAI." if raw.get("enabled") is False else "",
        always=raw.get("forceActivation") is True,
    )


def _apart(drafts: list[EntryDraft]) -> tuple[list[EntryDraft], tuple[str, ...]]:
    """Other tools let entries share keys and titles; a bible does not. A name taken already
    gets a number ("Eridu (2)"); a key another entry has is kept on the first entry only."""
    taken: set[str] = set()
    kept_drafts, dropped = [], []
    for draft in drafts:
        name = " ".join(draft.name.split()) or "Entry"
        base, number = name, 2
        while name_key(name) in taken:
            name, number = f"{base} ({number})", number + 1
        taken.add(name_key(name))
        aliases = []
        for alias in clean_keys(draft.aliases, name):
            if name_key(alias) in taken:
                dropped.append(alias)
            else:
                taken.add(name_key(alias))
                aliases.append(alias)
        kept_drafts.append(
            EntryDraft(name, draft.kind, tuple(aliases), draft.secondary_keys, draft.description,
                       draft.notes, draft.always, draft.facts)
        )
    return kept_drafts, tuple(dict.fromkeys(dropped))
