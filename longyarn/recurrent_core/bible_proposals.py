"""The bible updates a step proposes, checked against the bible as stored.

The memory role's reply may carry new entries, new facts and facts that end
(`replies.bible_updates`). Before they reach a front end each is checked: a fact for an
unknown entry, a second entry with a taken name, an end of a fact that is not in force or that
would end before it starts. What cannot stand is dropped with one sentence saying why; a new
entry whose name is taken becomes new facts of the entry that has it (merged, nothing lost).

The step carries what is left (`StepCompleted.bible_updates`) with the paragraph it came
from; front ends apply it: batch and readers at once, the writers' UI through its queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from .bible import (
    FACT_ID_SHOWN,
    BibleEntry,
    BibleFact,
    check_kind,
    fact_by_id_start,
    facts_by_entry,
    facts_in_force,
    find_entry,
    name_key,
)
from .errors import BibleError
from .replies.bible_updates import ParsedBibleUpdates
from .types import BibleProposals, DroppedUpdate, ProposedUpdate

__all__ = ["BibleProposals", "ProposedUpdate", "bible_facts_for_memory", "check_proposals"]


def check_proposals(
    parsed: ParsedBibleUpdates, entries: Sequence[BibleEntry], facts: Iterable[BibleFact], paragraph: int
) -> BibleProposals:
    """`parsed` checked against the story's `entries` and the branch's `facts` before paragraph
    `paragraph` (the one the updates came from)."""
    dropped = list(parsed.dropped)
    in_force = [fact for fact in facts if fact.holds_at(paragraph - 1) or fact.holds_at(paragraph)]
    new_entries: dict[str, ProposedUpdate] = {}  # by name key, each name and alias of it
    added: list[ProposedUpdate] = []  # new entries in order, then new facts, then ends
    facts_for_existing: list[ProposedUpdate] = []
    for item in parsed.new_entries:
        existing = _existing(entries, (item.name, *item.aliases))
        if existing is not None:  # a taken name: what it says becomes facts of that entry
            if item.description:
                facts_for_existing.append(ProposedUpdate("new_fact", existing.name, text=item.description))
            continue
        twin = next((new_entries[key] for key in map(name_key, (item.name, *item.aliases)) if key in new_entries), None)
        if twin is not None:  # named twice in one reply: merged into the first
            merged = _with_fact(twin, item.description)
            _replace(added, new_entries, twin, merged)
            continue
        try:
            kind = check_kind(item.kind or "")
        except BibleError:
            dropped.append(DroppedUpdate(item.name, (
                f"The proposed entry {item.name!r} had no known kind ({item.kind or 'none'}), so it was dropped."
            )))
            continue
        proposal = ProposedUpdate("new_entry", item.name, kind, item.aliases, item.description)
        added.append(proposal)
        for key in map(name_key, (item.name, *item.aliases)):
            new_entries[key] = proposal
    for item in parsed.new_facts:
        new = new_entries.get(name_key(item.entry))
        if new is not None:
            _replace(added, new_entries, new, _with_fact(new, item.text))
            continue
        existing = _existing(entries, (item.entry,))
        if existing is None:
            dropped.append(DroppedUpdate(item.text, (
                f"The proposed fact {item.text!r} is of {item.entry!r}, which the bible has no entry for, "
                "so it was dropped."
            )))
            continue
        facts_for_existing.append(ProposedUpdate("new_fact", existing.name, text=item.text))
    kept_facts = []
    for proposal in facts_for_existing:
        entry = find_entry(entries, proposal.entry_name)
        if any(fact.entry_id == entry.id and name_key(fact.text) == name_key(proposal.text) for fact in in_force):
            continue  # already known: nothing to add, nothing lost
        kept_facts.append(proposal)
    ends = []
    for item in parsed.ended_facts:
        ended = _ended(item, entries, in_force, paragraph, dropped)
        if ended is not None and all(other.fact_id != ended.fact_id for other in ends):
            ends.append(ended)
    return BibleProposals(paragraph, (*added, *kept_facts, *ends), tuple(dropped))


def _existing(entries: Sequence[BibleEntry], names: Sequence[str]) -> BibleEntry | None:
    for name in names:
        try:
            return find_entry(entries, name)
        except BibleError:
            continue
    return None


def _with_fact(proposal: ProposedUpdate, text: str) -> ProposedUpdate:
    if not text or any(name_key(text) == name_key(fact) for fact in proposal.facts):
        return proposal
    return replace(proposal, facts=(*proposal.facts, text))


def _replace(added: list[ProposedUpdate], by_name: dict[str, ProposedUpdate], old: ProposedUpdate, new: ProposedUpdate) -> None:
    added[added.index(old)] = new
    for key, value in list(by_name.items()):
        if value is old:
            by_name[key] = new


def _ended(item, entries, in_force, paragraph, dropped) -> ProposedUpdate | None:  # noqa: ANN001
    what = item.text or item.fact_id
    entry = _existing(entries, (item.entry,))
    if entry is None:
        dropped.append(DroppedUpdate(what, (
            f"The proposed end of {what!r} is of {item.entry!r}, which the bible has no entry for, so it was dropped."
        )))
        return None
    own = [fact for fact in in_force if fact.entry_id == entry.id]
    fact = None
    if item.fact_id:
        fact = fact_by_id_start(own, item.fact_id)
    if fact is None and item.text:
        fact = next((fact for fact in own if name_key(fact.text) == name_key(item.text)), None)
    if fact is None:
        dropped.append(DroppedUpdate(what, (
            f"The proposed end of {entry.name!r}'s fact {what!r} names no fact of it in force, so it was dropped."
        )))
        return None
    if paragraph - 1 < fact.from_paragraph:
        dropped.append(DroppedUpdate(fact.text, (
            f"The proposed end of {entry.name!r}'s fact {fact.text!r} would end it before it starts "
            f"(paragraph {fact.from_paragraph}), so it was dropped."
        )))
        return None
    return ProposedUpdate("end_fact", entry.name, text=fact.text, fact_id=fact.id)


def bible_facts_for_memory(entries: Sequence[BibleEntry], facts: Iterable[BibleFact], paragraph: int) -> str:
    """The memory prompt's Story bible section: each entry with its facts in force before
    `paragraph`, each fact with the start of its id, so the model can end one by it."""
    by_entry = facts_by_entry(facts_in_force(facts, max(1, paragraph - 1)))
    lines = []
    for entry in entries:
        aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
        lines.append(f"{entry.name} [{entry.kind}]{aliases}")
        lines.extend(f"  - [{fact.id[:FACT_ID_SHOWN]}] {fact.text}" for fact in by_entry.get(entry.id, []))
    return "\n".join(lines) if lines else "(no entries yet)"
