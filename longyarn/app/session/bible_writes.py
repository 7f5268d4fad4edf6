"""Changes to a story's bible: each checked whole before its first write, and each write kept
with its inverse so that undo can take it back. `longyarn bible` and the writers' session
(`longyarn.app.session.bible`) both change the bible through these.

Ids never change: an entry or fact that undo removes and redo brings back keeps its id (the
store's `restore_entry` and `restore_fact`), so every change recorded before or after it stays
valid. Everything here is synchronous: the session runs it in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from longyarn.recurrent_core.bible import (
    BibleEntry,
    BibleFact,
    EntryDraft,
    FactDraft,
    check_draft,
    check_fact_range,
    check_fact_text,
    check_names_free,
    edited_draft,
)
from longyarn.recurrent_core.store import StoryStore


class BibleWrite(Protocol):
    """One write already made to the store, which knows how to take itself back and redo itself."""

    def undo(self, store: StoryStore) -> None: ...

    def redo(self, store: StoryStore) -> None: ...


@dataclass
class EntryAdded:
    entry: BibleEntry
    kept: tuple[BibleEntry, list[BibleFact]] | None = None  # as undo found it, for redo

    def undo(self, store: StoryStore) -> None:
        # Facts learned since go with it (the store cascades), and come back with it.
        self.kept = (store.get_entry(self.entry.id), store.entry_facts(self.entry.id))
        store.remove_entry(self.entry.id)

    def redo(self, store: StoryStore) -> None:
        entry, facts = self.kept or (self.entry, [])
        store.restore_entry(entry, facts)


@dataclass
class EntryRemoved:
    entry: BibleEntry
    facts: list[BibleFact]  # on every branch

    def undo(self, store: StoryStore) -> None:
        store.restore_entry(self.entry, self.facts)

    def redo(self, store: StoryStore) -> None:
        self.entry, self.facts = store.get_entry(self.entry.id), store.entry_facts(self.entry.id)
        store.remove_entry(self.entry.id)


@dataclass
class EntryChanged:
    entry_id: str
    before: dict[str, object]
    after: dict[str, object]

    def undo(self, store: StoryStore) -> None:
        store.update_entry(self.entry_id, **self.before)

    def redo(self, store: StoryStore) -> None:
        store.update_entry(self.entry_id, **self.after)


@dataclass
class FactAdded:
    fact: BibleFact

    def undo(self, store: StoryStore) -> None:
        store.remove_fact(self.fact.id)

    def redo(self, store: StoryStore) -> None:
        store.restore_fact(self.fact)


@dataclass
class FactRemoved:
    fact: BibleFact

    def undo(self, store: StoryStore) -> None:
        store.restore_fact(self.fact)

    def redo(self, store: StoryStore) -> None:
        store.remove_fact(self.fact.id)


@dataclass
class FactChanged:
    fact_id: str
    before: dict[str, object]
    after: dict[str, object]

    def undo(self, store: StoryStore) -> None:
        store.edit_fact(self.fact_id, **self.before)

    def redo(self, store: StoryStore) -> None:
        store.edit_fact(self.fact_id, **self.after)


def undo_writes(store: StoryStore, writes: Sequence[BibleWrite]) -> None:
    for write in reversed(writes):
        write.undo(store)


def redo_writes(store: StoryStore, writes: Sequence[BibleWrite]) -> None:
    for write in writes:
        write.redo(store)


# ---- an entry's edit: what one save changes --------------------------------------------------


@dataclass(frozen=True)
class EntryEdit:
    """What one save of an entry changes: its fields, and its facts added, changed and removed."""

    fields: Mapping[str, object] = field(default_factory=dict)  # name, kind, aliases, ...
    added: tuple[FactDraft, ...] = ()
    changed: tuple[tuple[BibleFact, Mapping[str, object]], ...] = ()  # text, from/until_paragraph
    removed: tuple[BibleFact, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields or self.added or self.changed or self.removed)


@dataclass(frozen=True)
class EditedFact:
    """A fact as an editor holds it: `source` is the stored fact it was (None: a new one)."""

    text: str
    from_paragraph: int | str
    until_paragraph: int | str | None
    source: BibleFact | None = None


def entry_edit_between(
    entry: BibleEntry, fields: Mapping[str, object], shown: Iterable[BibleFact], facts: Iterable[EditedFact]
) -> EntryEdit:
    """The edit that turns `entry` and the facts an editor was `shown` into `fields` and `facts`."""
    changed_fields = {
        name: value for name, value in fields.items()
        if _comparable(value) != _comparable(getattr(entry, name))
    }
    kept: dict[str, BibleFact] = {}
    added, changed = [], []
    for edited in facts:
        if edited.source is None:
            added.append(FactDraft(edited.text, edited.from_paragraph, edited.until_paragraph))  # type: ignore[arg-type]
            continue
        kept[edited.source.id] = edited.source
        wanted = {"text": edited.text, "from_paragraph": edited.from_paragraph, "until_paragraph": edited.until_paragraph}
        differs = {name: value for name, value in wanted.items() if value != getattr(edited.source, name)}
        if differs:
            changed.append((edited.source, differs))
    removed = tuple(fact for fact in shown if fact.id not in kept)
    return EntryEdit(changed_fields, tuple(added), tuple(changed), removed)


def _comparable(value: object) -> object:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def check_entry_edit(entries: Iterable[BibleEntry], entry: BibleEntry, edit: EntryEdit) -> None:
    """Every check the store would make, before the first write: `BibleError` for the first problem."""
    if edit.fields:
        draft = edited_draft(entry, edit.fields)
        check_names_free(entries, (draft.name, *draft.aliases), entry_id=entry.id)
    for fact in edit.added:
        check_fact_text(fact.text)
        check_fact_range(fact.from_paragraph, fact.until_paragraph)
    for fact, fields in edit.changed:
        if "text" in fields:
            check_fact_text(fields["text"])  # type: ignore[arg-type]
        check_fact_range(
            fields.get("from_paragraph", fact.from_paragraph),  # type: ignore[arg-type]
            fields.get("until_paragraph", fact.until_paragraph),  # type: ignore[arg-type]
        )


def write_entry_edit(
    store: StoryStore, entry: BibleEntry, edit: EntryEdit, done: list[BibleWrite], *, step_id: str | None = None
) -> BibleEntry:
    """Make `edit` (checked already): the entry's fields first, then its facts added (learned
    after `step_id`, when given), changed and removed. Each write lands in `done` as it is made,
    so that a failure part way leaves in `done` what to undo."""
    if edit.fields:
        before = {name: getattr(entry, name) for name in edit.fields}
        entry = store.update_entry(entry.id, **edit.fields)
        done.append(EntryChanged(entry.id, before, {name: getattr(entry, name) for name in edit.fields}))
    for draft in edit.added:
        fact = store.add_fact(
            entry.id, draft.text, from_paragraph=draft.from_paragraph, until_paragraph=draft.until_paragraph,
            step_id=step_id,
        )
        done.append(FactAdded(fact))
    for fact, fields in edit.changed:
        before = {name: getattr(fact, name) for name in fields}
        updated = store.edit_fact(fact.id, **fields)
        done.append(FactChanged(fact.id, before, {name: getattr(updated, name) for name in fields}))
    for fact in edit.removed:
        store.remove_fact(fact.id)
        done.append(FactRemoved(fact))
    return entry


def write_new_entry(
    store: StoryStore, story_id: str, draft: EntryDraft, done: list[BibleWrite], *, step_id: str | None = None
) -> BibleEntry:
    """Add an entry with its facts: the writer's (story-wide) in one transaction, or, with
    `step_id`, learned after that paragraph (seen on its branches only)."""
    draft = check_draft(draft)  # a bad fact refuses the entry before it is written
    entry = store.add_entry(
        story_id, name=draft.name, kind=draft.kind, aliases=draft.aliases,
        secondary_keys=draft.secondary_keys, description=draft.description, notes=draft.notes,
        always=draft.always, facts=draft.facts if step_id is None else (),
    )
    done.append(EntryAdded(entry))
    if step_id is not None and draft.facts:
        write_entry_edit(store, entry, EntryEdit(added=draft.facts), done, step_id=step_id)
    return entry


def write_removal(store: StoryStore, entry: BibleEntry, done: list[BibleWrite]) -> None:
    """Remove the entry and its facts on every branch, kept so that undo can put them back."""
    facts = store.entry_facts(entry.id)
    store.remove_entry(entry.id)
    done.append(EntryRemoved(entry, facts))
