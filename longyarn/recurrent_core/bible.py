"""The story bible: entries (who and what the story is about), their dated facts, and chapters.

Entries belong to the story. Facts belong to the branch they were learned on: a fact's
`step_id` is the paragraph after which it was learned, and it is seen only on branches that
hold that paragraph, so a sibling branch does not see it and undo (moving the head back before
that paragraph) takes it back. A fact with no step (one a writer entered) holds on every branch.

Paragraph numbers are 1-based positions on a branch: a fact holds from paragraph
`from_paragraph` on, through `until_paragraph` when it has one, so "Mara is a captain" can
follow "Mara is a sailor".

Plain values and pure checks only; `longyarn.recurrent_core.store.StoryStore` persists them.
Every check raises `BibleError`, one sentence that says what was wrong, that nothing was
changed, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from .errors import BibleError

EntryKind = Literal["character", "place", "object", "group", "lore", "rule"]
ENTRY_KINDS: tuple[EntryKind, ...] = ("character", "place", "object", "group", "lore", "rule")
# What `update_entry` may change; ids, the story and the times are the store's.
EDITABLE_ENTRY_FIELDS = frozenset(
    {"name", "kind", "aliases", "secondary_keys", "description", "notes", "always"}
)
EDITABLE_FACT_FIELDS = frozenset({"text", "from_paragraph", "until_paragraph"})
EDITABLE_CHAPTER_FIELDS = frozenset({"title", "summary", "start_step_id", "closed"})
# A fact may be named by the start of its id, as long as that start is this long and unique.
SHORTEST_FACT_ID_PREFIX = 4
# Characters of a fact's id shown to writers and to the model: enough to name it by.
FACT_ID_SHOWN = 8


@dataclass(frozen=True)
class BibleEntry:
    """A character, place, object, group, piece of lore or rule of a story."""

    id: str
    story_id: str
    kind: EntryKind
    name: str
    aliases: tuple[str, ...]
    secondary_keys: tuple[str, ...]  # further words that may activate it, as World Info's
    description: str
    notes: str  # the writer's own; never sent to the model
    always: bool  # in every prompt, named or not
    created_at: datetime
    updated_at: datetime

    @property
    def names(self) -> tuple[str, ...]:
        """The entry's name, then its aliases: every way the story may call it."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class BibleFact:
    """Something true of an entry from paragraph `from_paragraph` on (through `until_paragraph`)."""

    id: str
    entry_id: str
    text: str
    from_paragraph: int  # 1-based paragraph number on the branch
    until_paragraph: int | None  # the last paragraph it holds in (inclusive); None: still holds
    step_id: str | None  # learned after this paragraph; None: entered by the writer, story-wide
    branch_owner: str | None  # a reader's id for a reader's own branch; None for the author's
    created_at: datetime

    def holds_at(self, paragraph: int) -> bool:
        return self.from_paragraph <= paragraph and (
            self.until_paragraph is None or paragraph <= self.until_paragraph
        )


@dataclass(frozen=True)
class Chapter:
    """A chapter: it starts at a paragraph (None: the story's start) and closes with a summary."""

    id: str
    story_id: str
    title: str
    summary: str
    start_step_id: str | None
    closed: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class KeptUpdate:
    """A bible update the model proposed, as the store keeps it while it waits for the writer:
    `update` is its JSON form (the writers' session writes and reads it), `problem` why
    accepting it failed, if it did."""

    id: str
    step_id: str | None  # the paragraph it came from
    update: dict
    problem: str | None = None


@dataclass(frozen=True)
class FactDraft:
    """A fact to add along with its entry (writer-entered: no step, so story-wide)."""

    text: str
    from_paragraph: int = 1
    until_paragraph: int | None = None


@dataclass(frozen=True)
class EntryDraft:
    """An entry to add, with its facts: what `add --fact` and an imported file hold."""

    name: str
    kind: str
    aliases: tuple[str, ...] = ()
    secondary_keys: tuple[str, ...] = ()
    description: str = ""
    notes: str = ""
    always: bool = False
    facts: tuple[FactDraft, ...] = field(default=())


# ---- pure helpers -----------------------------------------------------------------------


def facts_in_force(facts: Iterable[BibleFact], paragraph: int) -> list[BibleFact]:
    """The facts that hold at paragraph `paragraph` (1-based), in the order given."""
    return [fact for fact in facts if fact.holds_at(paragraph)]


def facts_by_entry(facts: Iterable[BibleFact]) -> dict[str, list[BibleFact]]:
    """Facts grouped by their entry's id, each group in the order given."""
    grouped: dict[str, list[BibleFact]] = {}
    for fact in facts:
        grouped.setdefault(fact.entry_id, []).append(fact)
    return grouped


def entry_order(entry: BibleEntry) -> tuple[int, str, str]:
    """How a bible lists its entries: by kind (as ENTRY_KINDS orders them), then by name."""
    kind = ENTRY_KINDS.index(entry.kind) if entry.kind in ENTRY_KINDS else len(ENTRY_KINDS)
    return kind, name_key(entry.name), entry.id


def name_key(name: str) -> str:
    """How names compare: case-insensitively, whatever the spacing."""
    return " ".join(name.split()).casefold()


def find_entry(entries: Iterable[BibleEntry], name_or_id: str) -> BibleEntry:
    """The entry with this id, name or alias (case-insensitive); `BibleError` if none."""
    entries = list(entries)
    for entry in entries:
        if entry.id == name_or_id:
            return entry
    wanted = name_key(name_or_id)
    for entry in entries:
        if any(name_key(name) == wanted for name in entry.names):
            return entry
    raise BibleError(
        f"The story bible has no entry called {name_or_id.strip()!r}, so nothing was changed; "
        "list the bible to see its entries' names."
    )


def find_fact(facts: Iterable[BibleFact], fact_id: str, entry: BibleEntry) -> BibleFact:
    """The fact of `entry` with this id, or with the only id that starts with it."""
    own = [fact for fact in facts if fact.entry_id == entry.id]
    exact = [fact for fact in own if fact.id == fact_id]
    prefixed = [fact for fact in own if fact.id.startswith(fact_id)]
    if exact:
        return exact[0]
    if len(fact_id) >= SHORTEST_FACT_ID_PREFIX and len(prefixed) == 1:
        return prefixed[0]
    problem = "several of its facts" if len(prefixed) > 1 else "none of its facts"
    raise BibleError(
        f"The entry {entry.name!r} has {problem} with id {fact_id!r}, so nothing was changed; "
        "list the bible to see each fact's id, and give more of it."
    )


def edited_draft(entry: BibleEntry, fields: dict[str, object]) -> EntryDraft:
    """`entry` with `fields` changed, checked (`BibleError`); a lone alias or key counts as one."""
    merged = {name: fields.get(name, getattr(entry, name)) for name in EDITABLE_ENTRY_FIELDS}
    for keys in ("aliases", "secondary_keys"):
        value = merged[keys]
        merged[keys] = (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]
    return check_draft(EntryDraft(**merged))  # type: ignore[arg-type]


def fact_by_id_start(facts: Iterable[BibleFact], shown_id: str) -> BibleFact | None:
    """The one fact whose id starts with `shown_id` (as a listing or a prompt shows it: maybe in
    brackets, any case), or None when none or several do or it is too short to tell."""
    wanted = shown_id.strip().strip("[]#").casefold()
    if len(wanted) < SHORTEST_FACT_ID_PREFIX:
        return None
    matches = [fact for fact in facts if fact.id.casefold().startswith(wanted)]
    return matches[0] if len(matches) == 1 else None


# ---- checks: each returns the cleaned value or raises BibleError ----------------------------


def check_kind(kind: str) -> EntryKind:
    cleaned = kind.strip().lower()
    if cleaned not in ENTRY_KINDS:
        raise BibleError(
            f"{kind!r} is not a kind of bible entry, so nothing was changed; "
            f"use one of {', '.join(ENTRY_KINDS)}."
        )
    return cleaned  # type: ignore[return-value]


def check_name(name: str) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise BibleError("A bible entry needs a name, so nothing was changed; give it one.")
    return cleaned


def clean_keys(keys: Iterable[str], name: str = "") -> tuple[str, ...]:
    """Aliases or secondary keys as kept: trimmed, none empty, none twice, none the name itself."""
    seen = {name_key(name)} if name else set()
    kept = []
    for key in keys:
        cleaned = " ".join(str(key).split())
        if cleaned and name_key(cleaned) not in seen:
            seen.add(name_key(cleaned))
            kept.append(cleaned)
    return tuple(kept)


def check_names_free(
    entries: Iterable[BibleEntry], names: Sequence[str], *, entry_id: str | None = None
) -> None:
    """No other entry of the story (than `entry_id`) has any of `names` as its name or alias."""
    taken = {
        name_key(name): (entry, name)
        for entry in entries
        if entry.id != entry_id
        for name in entry.names
    }
    for name in names:
        clash = taken.get(name_key(name))
        if clash is None:
            continue
        entry, its_name = clash
        if name_key(its_name) == name_key(entry.name):
            held = f"the name of the {entry.kind} {entry.name!r}"
        else:
            held = f"an alias of the {entry.kind} {entry.name!r}"
        raise BibleError(
            f"{name!r} is already {held} in this story's bible, so nothing was changed; "
            f"choose another name, or edit {entry.name!r} instead."
        )


def check_fact_text(text: str) -> str:
    cleaned = str(text).strip()
    if not cleaned:
        raise BibleError("A fact needs some text, so nothing was changed; say what holds.")
    return cleaned


def check_fact_range(from_paragraph: int, until_paragraph: int | None) -> None:
    if isinstance(from_paragraph, bool) or not isinstance(from_paragraph, int) or from_paragraph < 1:
        raise BibleError(
            f"A fact cannot start at paragraph {from_paragraph!r}, so nothing was changed; "
            "paragraphs are numbered from 1."
        )
    if until_paragraph is None:
        return
    if isinstance(until_paragraph, bool) or not isinstance(until_paragraph, int):
        raise BibleError(
            f"A fact cannot end at paragraph {until_paragraph!r}, so nothing was changed; "
            "give the number of the last paragraph it holds in."
        )
    if until_paragraph < from_paragraph:
        raise BibleError(
            f"A fact cannot end at paragraph {until_paragraph} before it starts at paragraph "
            f"{from_paragraph}, so nothing was changed; give an end at or after its start."
        )


def check_draft(draft: EntryDraft) -> EntryDraft:
    """The draft cleaned (name, kind, keys, facts), or `BibleError` for the first problem."""
    name = check_name(draft.name)
    facts = []
    for fact in draft.facts:
        check_fact_range(fact.from_paragraph, fact.until_paragraph)
        facts.append(FactDraft(check_fact_text(fact.text), fact.from_paragraph, fact.until_paragraph))
    return EntryDraft(
        name=name,
        kind=check_kind(draft.kind),
        aliases=clean_keys(draft.aliases, name),
        secondary_keys=clean_keys(draft.secondary_keys),
        description=str(draft.description).strip(),
        notes=str(draft.notes).strip(),
        always=bool(draft.always),
        facts=tuple(facts),
    )


def check_drafts_apart(drafts: Sequence[EntryDraft]) -> None:
    """No two drafts share a name or alias (as within one imported file)."""
    seen: dict[str, str] = {}
    for draft in drafts:
        for name in (draft.name, *draft.aliases):
            other = seen.get(name_key(name))
            if other is None:
                continue
            if name_key(other) == name_key(draft.name):
                raise BibleError(
                    f"Two entries are named {other!r}, so nothing was changed; "
                    "give every entry its own name."
                )
            raise BibleError(
                f"{name!r} names both {other!r} and {draft.name!r}, so nothing was changed; "
                "give every entry its own name and aliases."
            )
        for name in (draft.name, *draft.aliases):
            seen[name_key(name)] = draft.name
