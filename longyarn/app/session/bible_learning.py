"""What a step proposed for the story bible, turned into the writers' queue's updates.

The engine checks the memory reply's updates (`recurrent_core.bible_proposals`) and the step
carries them; here they become `BibleUpdate`s of the step and paragraph they came from, for
the writers' queue (`StoryBible.propose`, which auto-accepts when the setting says so; batch
always does), or, for a reader, applied at once on the reader's own branch.
"""

from __future__ import annotations

from longyarn.recurrent_core.bible import EntryDraft, FactDraft
from longyarn.recurrent_core.bible_proposals import BibleProposals, ProposedUpdate
from longyarn.recurrent_core.store import StoryStore
from longyarn.recurrent_core.types import Step

from .bible import BibleUpdate, StoryBible
from .history import History


def queue_updates(proposals: BibleProposals | None, step: Step) -> list[BibleUpdate]:
    """The step's proposed updates as the queue holds them, each naming `step` and its paragraph."""
    if proposals is None:
        return []
    return [_queued(update, step.id, proposals.paragraph) for update in proposals.updates]


def _queued(update: ProposedUpdate, step_id: str, paragraph: int) -> BibleUpdate:
    if update.kind == "new_entry":
        facts = tuple(FactDraft(text, paragraph) for text in update.facts)
        draft = EntryDraft(
            update.entry_name, update.entry_kind, aliases=update.aliases, description=update.description,
            facts=facts,
        )
        return BibleUpdate("new_entry", update.entry_name, entry=draft, step_id=step_id, paragraph=paragraph)
    if update.kind == "new_fact":
        return BibleUpdate("new_fact", update.entry_name, text=update.text, step_id=step_id, paragraph=paragraph)
    # No longer true from this paragraph: it held through the one before.
    return BibleUpdate(
        "end_fact", update.entry_name, text=update.text, step_id=step_id, paragraph=paragraph,
        until_paragraph=paragraph - 1,
    )


async def learn_on_own_branch(store: StoryStore, step: Step, proposals: BibleProposals | None) -> tuple[int, dict[str, str]]:
    """Apply a step's updates at once (a reader's step: auto-accepted on the reader's branch,
    since each fact is learned after that reader's step). (How many were applied, the
    problems of those that could not be, by description.)"""
    updates = queue_updates(proposals, step)
    if not updates:
        return 0, {}
    paragraph = proposals.paragraph if proposals else 0
    bible = StoryBible(store, step.story_id, History(), lambda: (step.id, paragraph), auto_accept=True,
                        keep_queue=False)
    await bible.propose(updates)
    problems = {update.describe(): bible.problems[update.id] for update in bible.pending if update.id in bible.problems}
    return len(updates) - len(bible.pending), problems
