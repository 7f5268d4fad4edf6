"""What a writer does about a contradiction the continuity check found: keep the paragraph and
update the fact it contradicts (the old fact ends at the paragraph before, the new one holds
from this paragraph on), through the bible's undoable path. Rewriting and retrying the
paragraph are the writing screen's own moves."""

from __future__ import annotations

from longyarn.recurrent_core.errors import BibleError
from longyarn.recurrent_core.types import Contradiction

from .bible import BibleUpdate
from .writing import WritingSession


def paragraph_number(session: WritingSession, step_id: str) -> int:
    """The step's 1-based place on the branch; BibleError when it is no longer on it."""
    for number, step in enumerate(session.branch, 1):
        if step.id == step_id:
            return number
    raise BibleError("That paragraph is no longer on this branch, so the fact was not changed; go back to it first.")


async def update_contradicted_fact(session: WritingSession, step_id: str, found: Contradiction, new_text: str) -> None:
    """End `found`'s fact at the paragraph before `step_id`'s and add `new_text` from it on,
    learned after that paragraph; each an undoable step. BibleError if either cannot be."""
    text = " ".join(new_text.split())
    if not text:
        raise BibleError("The new fact is empty, so nothing was changed; say what holds now.")
    number = paragraph_number(session, step_id)
    ended = BibleUpdate("end_fact", found.entry_name, text=found.fact, step_id=step_id, paragraph=number,
                        until_paragraph=number - 1)
    added = BibleUpdate("new_fact", found.entry_name, text=text, step_id=step_id, paragraph=number)
    bible = session.bible
    await bible.propose([ended, added])
    for update in (ended, added):
        if update in bible.pending:  # not auto-accepted: the writer asked for it, so it is accepted now
            await bible.accept(update)


def contradictions_of(session: WritingSession, step_id: str) -> tuple[Contradiction, ...]:
    return session.contradictions.get(step_id, ())
