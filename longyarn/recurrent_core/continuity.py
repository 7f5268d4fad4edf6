"""Contradiction checks: a new paragraph against the story bible facts in force that the
writer's prompt sent (the activation's facts), and those of entries the paragraph itself names
(activation ran before it was written, so a name it brings in was not searched for).

The continuity role answers in JSON (`replies.continuity`); each contradiction it names is
matched back to a fact that was sent, by the start of its id or by its text. One that names no
fact sent is left out: a check may only speak of what it was shown.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .bible import FACT_ID_SHOWN, BibleEntry, BibleFact, fact_by_id_start, name_key
from .bible_activation import find_name, fold
from .replies import fallbacks
from .replies.continuity import ContradictionItem, parse_contradictions
from .role_prompts import PromptFitter
from .types import BibleActivation, Contradiction, Usage

# The engine's structured ask: (role, prompt, fitter, give_up_quietly=) -> a RoleReply.
AskStructured = Callable[..., Awaitable[Any]]



@dataclass(frozen=True)
class CheckedFact:
    fact: BibleFact
    entry_name: str


def facts_to_check(
    activation: BibleActivation | None, facts: Iterable[BibleFact], named_in_paragraph: Sequence[BibleEntry] = (),
    paragraph_number: int = 0,
) -> list[CheckedFact]:
    """The facts the writer was sent (in force at its paragraph), with their entries' names;
    then those in force of entries the new paragraph itself names, which activation, done
    before the paragraph was written, could not know of."""
    facts = list(facts)
    by_id = {fact.id: fact for fact in facts}
    checked = [
        CheckedFact(by_id[fact_id], entry.name)
        for entry in (activation.sent if activation else ()) for fact_id in entry.fact_ids if fact_id in by_id
    ]
    sent = {item.fact.id for item in checked}
    for entry in named_in_paragraph:
        checked.extend(
            CheckedFact(fact, entry.name) for fact in facts
            if fact.entry_id == entry.id and fact.id not in sent and fact.holds_at(paragraph_number)
        )
    return checked


def entries_named(entries: Iterable[BibleEntry], paragraph: str) -> list[BibleEntry]:
    """The entries whose name or an alias the paragraph holds as whole words."""
    folded = fold(paragraph)
    return [entry for entry in entries if any(find_name(name, folded) >= 0 for name in entry.names)]


def facts_text(checked: Sequence[CheckedFact]) -> str:
    """The prompt's Facts to check, one a line: "[id] Entry: fact"."""
    return "\n".join(f"[{item.fact.id[:FACT_ID_SHOWN]}] {item.entry_name}: {item.fact.text}" for item in checked)


def match_contradictions(items: Iterable[ContradictionItem], checked: Sequence[CheckedFact]) -> tuple[Contradiction, ...]:
    """The reply's contradictions that name a fact that was checked, once each."""
    found: dict[tuple[str, str], Contradiction] = {}
    for item in items:
        match = _fact_named(item, checked)
        if match is None:
            continue
        key = (match.fact.id, name_key(item.sentence))
        found.setdefault(key, Contradiction(match.fact.id, match.entry_name, match.fact.text, item.sentence, item.explanation))
    return tuple(found.values())


def _fact_named(item: ContradictionItem, checked: Sequence[CheckedFact]) -> CheckedFact | None:
    by_id = fact_by_id_start((c.fact for c in checked), item.fact_id)
    if by_id is not None:
        return next(c for c in checked if c.fact is by_id)
    text = name_key(item.fact)
    if text:
        by_text = [c for c in checked if name_key(c.fact.text) == text or name_key(f"{c.entry_name}: {c.fact.text}") == text]
        if len(by_text) == 1:
            return by_text[0]
    return None


@dataclass(frozen=True)
class ContinuityOutcome:
    contradictions: tuple[Contradiction, ...] | None  # None: not checked
    usage: Usage
    notes: tuple[str, ...] = ()  # for the step's record: why it was not checked


async def check_paragraph(
    ask: AskStructured, fitter: PromptFitter, activation: BibleActivation | None, facts: Iterable[BibleFact],
    paragraph: str, *, entries: Sequence[BibleEntry] = (), paragraph_number: int = 0,
) -> ContinuityOutcome:
    """Ask the continuity role about `paragraph` (number `paragraph_number`) and the facts in
    force that were sent, or that belong to `entries` it names; not asked when there are none."""
    checked = facts_to_check(activation, facts, entries_named(entries, paragraph), paragraph_number)
    if not checked:
        return ContinuityOutcome(None, Usage())
    reply = await ask("continuity", fitter.continuity(facts_text(checked), paragraph), fitter, give_up_quietly=True)
    items = parse_contradictions(reply.text)
    if items is None:
        return ContinuityOutcome(None, reply.usage, (fallbacks.CONTINUITY_UNREADABLE,))
    return ContinuityOutcome(match_contradictions(items, checked), reply.usage)
