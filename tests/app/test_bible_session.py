"""The story bible in the writer's session: every change is an undoable step of the writer's
history in the order made, and proposed updates wait to be accepted, edited or rejected."""

from __future__ import annotations

import pytest

from longyarn.app.session.bible import BibleUpdate
from longyarn.app.session.bible_writes import EditedFact, EntryEdit, entry_edit_between
from longyarn.app.session.engine_host import EngineHost
from longyarn.app.session.writing import WritingSession
from longyarn.recurrent_core.bible import EntryDraft, FactDraft
from longyarn.recurrent_core.errors import BibleError
from tests.storage.helpers import write_chain


@pytest.fixture
def story(store):
    return store.create_story(title="The Lighthouse", premise="A keeper.", genre="fable", outline="Mara keeps the light.")


async def writing_session(store, story_id: str) -> WritingSession:
    session = WritingSession(store, EngineHost(None), story_id)
    session.bible.auto_accept = False  # as the writers' UI starts
    await session.reload()
    return session


def facts_of(store, story_id: str, entry_id: str) -> list[tuple[str, int, int | None]]:
    story = store.get_story(story_id)
    return [(f.text, f.from_paragraph, f.until_paragraph) for f in store.facts_on_branch(story_id, story.head_step_id)
            if f.entry_id == entry_id]


async def test_bible_changes_are_undone_and_redone_in_the_order_made_with_the_paragraphs(store, story):
    write_chain(store, story.id, ["One.", "Two.", "Three."])
    session = await writing_session(store, story.id)
    bible = session.bible
    mara = await bible.add_entry(EntryDraft("Mara", "character", facts=(FactDraft("Mara is a sailor."),)))
    [sailor] = store.entry_facts(mara.id)
    mara = await bible.edit_entry(mara, EntryEdit(
        {"aliases": ("the captain",)}, added=(FactDraft("Mara is a captain.", 3),),
        changed=((sailor, {"until_paragraph": 2}),),
    ))
    await bible.set_always(mara, True)
    await session.move_head(session.branch[1].id)  # a move of the head between them
    await bible.remove_entry(store.get_entry(mara.id))
    assert store.list_entries(story.id) == []

    assert await session.undo() == "removing the character 'Mara'"
    assert store.get_entry(mara.id).always and len(store.entry_facts(mara.id)) == 2, "same id, every fact"
    assert await session.undo() == "the move"
    assert await session.undo() == "pinning 'Mara' to every prompt"
    assert await session.undo() == "the edit of the character 'Mara'"
    assert facts_of(store, story.id, mara.id) == [("Mara is a sailor.", 1, None)]
    assert store.get_entry(mara.id).aliases == ()
    assert await session.undo() == "adding the character 'Mara'"
    assert store.list_entries(story.id) == []
    for _ in range(5):
        await session.redo()
    assert store.list_entries(story.id) == [] and len(session.branch) == 2
    assert await session.undo() == "removing the character 'Mara'"
    assert store.get_entry(mara.id).aliases == ("the captain",)


async def test_an_edit_is_checked_whole_before_its_first_write(store, story):
    session = await writing_session(store, story.id)
    await session.bible.add_entry(EntryDraft("Ada", "character"))
    mara = await session.bible.add_entry(EntryDraft("Mara", "character"))
    bad = EntryEdit({"description": "changed"}, added=(FactDraft("Mara sleeps.", 5, 3),))
    with pytest.raises(BibleError, match="cannot end at paragraph 3 before it starts at paragraph 5"):
        await session.bible.edit_entry(mara, bad)
    with pytest.raises(BibleError, match="'ada' is already the name of the character 'Ada'"):
        await session.bible.edit_entry(mara, EntryEdit({"name": "ada"}, added=(FactDraft("Fine."),)))
    assert store.get_entry(mara.id).description == "" and store.entry_facts(mara.id) == []
    assert session.history.next_undo().description == "adding the character 'Mara'", "nothing was recorded"


def test_an_editors_facts_become_the_edit_that_makes_them():
    from datetime import datetime, timezone

    from longyarn.recurrent_core.bible import BibleEntry, BibleFact

    now = datetime.now(timezone.utc)
    entry = BibleEntry("e", "s", "character", "Mara", ("Captain",), (), "", "", False, now, now)
    kept, ended, dropped = (BibleFact(i, "e", text, 1, None, None, None, now) for i, text in
                            (("k", "Kept."), ("n", "Ends."), ("d", "Dropped.")))
    edit = entry_edit_between(
        entry, {"name": "Mara", "aliases": ("Captain",), "always": True},
        [kept, ended, dropped],
        [EditedFact("Kept.", 1, None, kept), EditedFact("Ends.", 1, 4, ended), EditedFact("New.", 2, None)],
    )
    assert edit == EntryEdit({"always": True}, (FactDraft("New.", 2, None),), ((ended, {"until_paragraph": 4}),), (dropped,))
    assert not entry_edit_between(entry, {"name": "Mara"}, [kept], [EditedFact("Kept.", 1, None, kept)])


async def test_proposed_updates_wait_and_accepting_or_rejecting_each_is_undoable(store, story):
    steps = write_chain(store, story.id, ["One.", "Two.", "Three."])
    session = await writing_session(store, story.id)
    bible = session.bible
    heard = []
    bible.listen(lambda: heard.append(len(bible.pending)))
    mara = await bible.add_entry(EntryDraft("Mara", "character", facts=(FactDraft("Mara is a sailor."),)))
    new_entry = BibleUpdate("new_entry", "Tobias", entry=EntryDraft("Tobias", "character", facts=(FactDraft("Tobias lies.", 3),)),
                            step_id=steps[2].id, paragraph=3)
    new_fact = BibleUpdate("new_fact", "mara", text="Mara is a captain.", step_id=steps[2].id, paragraph=3)
    ended = BibleUpdate("end_fact", "Mara", text="mara is a  sailor.", step_id=steps[2].id, paragraph=3, until_paragraph=2)
    unknown = BibleUpdate("new_fact", "Nobody", text="Who?", paragraph=3)
    await bible.propose([new_entry, new_fact, ended, unknown])
    assert bible.pending == [new_entry, new_fact, ended, unknown] and heard[-1] == 4

    await bible.accept(new_entry)
    tobias = next(e for e in store.list_entries(story.id) if e.name == "Tobias")
    assert [(f.text, f.step_id) for f in store.entry_facts(tobias.id)] == [("Tobias lies.", steps[2].id)], "learned"
    await bible.accept(new_fact, BibleUpdate("new_fact", "Mara", text="Mara captains the Gull.", step_id=steps[2].id,
                                             paragraph=3, id=new_fact.id))
    await bible.accept(ended)
    assert facts_of(store, story.id, mara.id) == [("Mara is a sailor.", 1, 2), ("Mara captains the Gull.", 3, None)]
    with pytest.raises(BibleError, match="no entry called 'Nobody'"):
        await bible.accept(unknown)
    assert bible.pending == [unknown] and "no entry called 'Nobody'" in bible.problems[unknown.id]
    await bible.reject(unknown)
    assert bible.pending == []

    assert await session.undo() == "rejecting a fact of 'Nobody': Who?"
    assert bible.pending == [unknown]
    await session.undo()
    await session.undo()
    assert bible.pending == [new_fact, ended, unknown], "an undone acceptance waits again, where it was"
    assert facts_of(store, story.id, mara.id) == [("Mara is a sailor.", 1, None)]
    await session.redo()
    assert bible.pending == [ended, unknown]


async def test_auto_accept_applies_updates_as_they_come_and_keeps_those_it_cannot(store, story):
    [step] = write_chain(store, story.id, ["One."])
    session = WritingSession(store, EngineHost(None), story.id)
    assert session.bible.auto_accept, "batch (no settings) accepts every update"
    await session.reload()
    await session.bible.propose([
        BibleUpdate("new_entry", "Mara", entry=EntryDraft("Mara", "character"), step_id=step.id, paragraph=1),
        BibleUpdate("new_fact", "Mara", text="Mara keeps the light.", step_id=step.id, paragraph=1),
        BibleUpdate("end_fact", "Mara", text="Mara sleeps.", step_id=step.id, paragraph=1),
    ])
    [mara] = store.list_entries(story.id)
    assert facts_of(store, story.id, mara.id) == [("Mara keeps the light.", 1, None)]
    [left] = session.bible.pending
    assert session.bible.problems[left.id].startswith("'Mara' has no fact 'Mara sleeps.' on this branch")


async def test_the_queue_outlives_the_session_with_its_problems_and_decisions(store, db_path, story):
    from longyarn.storage.db import open_store

    steps = write_chain(store, story.id, ["One.", "Two."])
    session = await writing_session(store, story.id)
    bible = session.bible
    await bible.add_entry(EntryDraft("Mara", "character"))
    tobias = BibleUpdate("new_entry", "Tobias", entry=EntryDraft("Tobias", "character", aliases=("Toby",),
                         facts=(FactDraft("Tobias lies.", 2),)), step_id=steps[1].id, paragraph=2)
    fact = BibleUpdate("new_fact", "Mara", text="Mara keeps the light.", step_id=steps[1].id, paragraph=2)
    unknown = BibleUpdate("new_fact", "Nobody", text="Who?", step_id=steps[0].id, paragraph=1)
    rejected = BibleUpdate("new_fact", "Mara", text="Mara is a ghost.", step_id=steps[1].id, paragraph=2)
    await bible.propose([tobias, fact, unknown, rejected])
    await bible.accept(fact)
    await bible.reject(rejected)
    with pytest.raises(BibleError):
        await bible.accept(unknown)

    with open_store(str(db_path)) as reopened:  # the writer quits and comes back
        later = await writing_session(reopened, story.id)
        assert later.bible.pending == [tobias, unknown], "the same updates, entry and all, in their order"
        assert "no entry called 'Nobody'" in later.bible.problems[unknown.id]
        await later.bible.accept(later.bible.pending[0])
        assert [e.name for e in reopened.list_entries(story.id)] == ["Mara", "Tobias"]
        assert later.bible.pending == [unknown]

    # Back in the first session, undo takes back the rejection and the acceptance: both wait
    # again, for the next session too.
    assert await session.undo() == "rejecting a fact of 'Mara': Mara is a ghost."
    assert await session.undo() == "accepting a fact of 'Mara': Mara keeps the light."
    third = await writing_session(store, story.id)
    assert third.bible.pending == [fact, unknown, rejected]
    await third.move_head(steps[0].id)
    assert third.bible.pending == [unknown], "a paragraph's updates wait on the branches that hold it"
