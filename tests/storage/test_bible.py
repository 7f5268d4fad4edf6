"""The story bible in storage: entries belong to the story, facts to the branch they were learned
on, and a bad change is one sentence that changes nothing. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from longyarn.recurrent_core.bible import EntryDraft, FactDraft, facts_in_force
from longyarn.recurrent_core.errors import BibleError, StoryNotFound
from longyarn.storage import SqlStore, open_store
from longyarn.storage.models import BibleEntryRow, BibleFactRow, ChapterRow

from .helpers import EMBEDDING_MODEL, new_step, vector, write_chain


def texts(facts) -> list[str]:
    return [fact.text for fact in facts]


def names(store: SqlStore, story_id: str) -> list[str]:
    return [entry.name for entry in store.list_entries(story_id)]


def test_entries_are_listed_by_kind_then_name_with_what_was_given(store: SqlStore, story):
    store.add_entry(story.id, name="The Lantern", kind="object", description="Never goes out.")
    mara = store.add_entry(
        story.id, name="  Mara  Voss ", kind="Character", aliases=["the captain", "MARA VOSS", "", "Mara"],
        secondary_keys=["ship"], description="A sailor.", notes="Based on my aunt.", always=True,
    )
    store.add_entry(story.id, name="Ada", kind="character")
    store.add_entry(story.id, name="Brine", kind="place")

    assert names(store, story.id) == ["Ada", "Mara Voss", "Brine", "The Lantern"]
    fetched = store.get_entry(mara.id)
    assert fetched == mara
    assert (fetched.name, fetched.kind, fetched.aliases) == ("Mara Voss", "character", ("the captain", "Mara"))
    assert (fetched.secondary_keys, fetched.description, fetched.notes, fetched.always) == (
        ("ship",), "A sailor.", "Based on my aunt.", True,
    )


@pytest.mark.parametrize(
    ("name", "aliases", "taken"),
    [("mara", (), "the name of the character 'Mara'"), ("Ship", ("THE CAPTAIN",), "an alias of")],
)
def test_a_name_or_alias_another_entry_has_is_refused_whatever_its_case(store, story, name, aliases, taken):
    store.add_entry(story.id, name="Mara", kind="character", aliases=["the captain"])

    with pytest.raises(BibleError, match=f"already {taken}.*nothing was changed"):
        store.add_entry(story.id, name=name, kind="object", aliases=aliases)

    assert names(store, story.id) == ["Mara"]


def test_renaming_onto_another_entrys_alias_is_refused_and_changes_nothing(store: SqlStore, story):
    store.add_entry(story.id, name="Mara", kind="character", aliases=["the captain"])
    ship = store.add_entry(story.id, name="Gull", kind="object", description="A ketch.")

    with pytest.raises(BibleError, match="'The Captain' is already an alias of the character 'Mara'"):
        store.update_entry(ship.id, name="The Captain", description="changed")

    assert store.get_entry(ship.id) == ship
    # An entry may keep its own name and take its own alias's case.
    renamed = store.update_entry(ship.id, name="GULL", aliases=["the ketch"], kind="group", always=True)
    assert (renamed.name, renamed.aliases, renamed.kind, renamed.always) == ("GULL", ("the ketch",), "group", True)
    assert renamed.updated_at > ship.updated_at


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " ", "kind": "character"}, "needs a name"),
        ({"name": "Mara", "kind": "spaceship"}, "'spaceship' is not a kind of bible entry.*character, place"),
        ({"name": "Mara", "kind": "character", "facts": [FactDraft("Sails.", 5, 3)]},
         "cannot end at paragraph 3 before it starts at paragraph 5"),
        ({"name": "Mara", "kind": "character", "facts": [FactDraft("Sails.", 0)]}, "numbered from 1"),
    ],
)
def test_a_bad_entry_is_one_sentence_and_nothing_is_stored(store: SqlStore, story, fields, message):
    with pytest.raises(BibleError, match=message) as raised:
        store.add_entry(story.id, **fields)
    assert str(raised.value).count(". ") == 0 and "nothing was changed" in str(raised.value)
    assert store.list_entries(story.id) == []
    assert store.facts_on_branch(story.id, None) == []


def test_unknown_entries_facts_and_stories_are_named_in_the_error(store: SqlStore, story):
    with pytest.raises(BibleError, match="No bible entry with id 'nope'"):
        store.update_entry("nope", name="X")
    with pytest.raises(BibleError, match="No bible entry"):
        store.add_fact("nope", "Holds.", from_paragraph=1)
    with pytest.raises(BibleError, match="No bible fact with id 'gone'"):
        store.end_fact("gone", 3)
    with pytest.raises(StoryNotFound, match="No story with id 'missing'"):
        store.add_entry("missing", name="Mara", kind="character")
    with pytest.raises(BibleError, match="no editable field 'story_id'"):
        store.update_entry(store.add_entry(story.id, name="M", kind="rule").id, story_id="x")


def test_dated_facts_hold_from_their_start_through_their_end(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character",
                           facts=[FactDraft("Mara is a sailor.", 1)])
    [sailor] = store.facts_on_branch(story.id, None)
    store.end_fact(sailor.id, 12)
    captain = store.add_fact(mara.id, "Mara is a captain.", from_paragraph=13)

    facts = store.facts_on_branch(story.id, None)
    assert texts(facts_in_force(facts, 12)) == ["Mara is a sailor."]
    assert texts(facts_in_force(facts, 13)) == ["Mara is a captain."]

    with pytest.raises(BibleError, match="cannot end at paragraph 10 before it starts at paragraph 13"):
        store.end_fact(captain.id, 10)
    edited = store.edit_fact(captain.id, text="Mara captains the Gull.", until_paragraph=None)
    assert (edited.text, edited.from_paragraph, edited.until_paragraph) == ("Mara captains the Gull.", 13, None)
    store.remove_fact(sailor.id)
    assert texts(store.facts_on_branch(story.id, None)) == ["Mara captains the Gull."]


def test_the_schema_itself_refuses_a_fact_that_ends_before_it_starts(store: SqlStore, story):
    entry = store.add_entry(story.id, name="Mara", kind="character")
    row = dict(id="f1", story_id=story.id, entry_id=entry.id, text="x", from_paragraph=5,
               until_paragraph=4, step_id=None, branch_owner=None, created_at=entry.created_at)
    with pytest.raises(IntegrityError), store.engine.begin() as connection:
        connection.execute(insert(BibleFactRow), [row])


def test_a_learned_fact_is_seen_on_its_branch_only_and_undo_takes_it_back(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character",
                           facts=[FactDraft("Mara was born at sea.")])
    first, second, third = write_chain(store, story.id, ["One.", "Two.", "Three."])
    store.add_fact(mara.id, "Mara lost her ring.", from_paragraph=2, step_id=second.id)
    # A sibling of the second paragraph: another way the story could go.
    [other] = write_chain(store, story.id, ["Two, otherwise."], parent_id=first.id)

    assert texts(store.facts_on_branch(story.id, third.id)) == ["Mara was born at sea.", "Mara lost her ring."]
    assert texts(store.facts_on_branch(story.id, other.id)) == ["Mara was born at sea."]
    assert texts(store.facts_on_branch(story.id, None)) == ["Mara was born at sea."]

    undone = store.set_head(story.id, first.id)
    assert texts(store.facts_on_branch(story.id, undone.head_step_id)) == ["Mara was born at sea."]
    redone = store.set_head(story.id, third.id)
    assert "Mara lost her ring." in texts(store.facts_on_branch(story.id, redone.head_step_id))


def test_a_deleted_paragraphs_facts_are_out_of_sight_until_it_is_restored(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character")
    first, second = write_chain(store, story.id, ["One.", "Two."])
    store.add_fact(mara.id, "Mara found a key.", from_paragraph=1, step_id=first.id)

    store.delete_paragraph(first.id)
    assert store.facts_on_branch(story.id, second.id) == []
    store.restore_paragraph(first.id)
    assert texts(store.facts_on_branch(story.id, second.id)) == ["Mara found a key."]


def test_a_readers_branch_learns_its_own_facts_and_sees_the_authors(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character")
    [author_step] = write_chain(store, story.id, ["The author's opening."])
    store.add_fact(mara.id, "Mara keeps the light.", from_paragraph=1, step_id=author_step.id)
    reader_step = store.commit_step(
        new_step(story.id, author_step.id, "The reader's turn.", branch_owner="reader-1"),
        embedding=vector(5), embedding_model=EMBEDDING_MODEL, move_head=False,
    )
    before = store.get_story(story.id)
    learned = store.add_fact(mara.id, "Mara trusts the reader.", from_paragraph=2, step_id=reader_step.id)

    assert (learned.step_id, learned.branch_owner) == (reader_step.id, "reader-1")
    assert texts(store.facts_on_branch(story.id, reader_step.id)) == [
        "Mara keeps the light.", "Mara trusts the reader.",
    ]
    assert texts(store.facts_on_branch(story.id, author_step.id)) == ["Mara keeps the light."]
    assert store.get_story(story.id).updated_at == before.updated_at, "a reader is not an author's edit"


def test_a_fact_cannot_be_learned_on_another_storys_paragraph(store: SqlStore, story):
    other = store.create_story(title="Other", premise="p", genre="g", outline="")
    [step] = write_chain(store, other.id, ["Elsewhere."])
    mara = store.add_entry(story.id, name="Mara", kind="character")

    with pytest.raises(StoryNotFound, match="No paragraph with id"):
        store.add_fact(mara.id, "Wrong story.", from_paragraph=1, step_id=step.id)
    assert store.facts_on_branch(story.id, None) == []


def count(store: SqlStore, row_type, story_id: str) -> int:
    with store.engine.connect() as connection:
        return connection.scalar(
            select(func.count()).select_from(row_type).where(row_type.story_id == story_id)
        )


def test_removing_an_entry_removes_its_facts_on_every_branch(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("A.")])
    [step] = write_chain(store, story.id, ["One."])
    store.add_fact(mara.id, "B.", from_paragraph=1, step_id=step.id)
    store.add_entry(story.id, name="Ada", kind="character", facts=[FactDraft("C.")])

    store.remove_entry(mara.id)

    assert names(store, story.id) == ["Ada"]
    assert texts(store.facts_on_branch(story.id, step.id)) == ["C."]
    assert count(store, BibleFactRow, story.id) == 1


def test_deleting_a_story_deletes_its_bible_and_chapters(store: SqlStore, story):
    [step] = write_chain(store, story.id, ["One."])
    mara = store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("A.")])
    store.add_fact(mara.id, "B.", from_paragraph=1, step_id=step.id)
    store.add_chapter(story.id, title="One", start_step_id=step.id)

    store.delete_story(story.id)

    assert [count(store, row, story.id) for row in (BibleEntryRow, BibleFactRow, ChapterRow)] == [0, 0, 0]


def test_an_import_adds_everything_or_nothing(store: SqlStore, story):
    store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("Old fact.")])
    drafts = [
        EntryDraft("Brine", "place", aliases=("the harbour",), facts=(FactDraft("Salt.", 2, 9),)),
        EntryDraft("Old Mara", "character", aliases=("MARA",)),
    ]
    with pytest.raises(BibleError, match="'MARA' is already the name of the character 'Mara'"):
        store.import_entries(story.id, drafts)
    assert names(store, story.id) == ["Mara"]

    with pytest.raises(BibleError, match="Two entries are named 'Brine'"):
        store.import_entries(story.id, [drafts[0], EntryDraft("brine", "lore")], replace=True)
    assert names(store, story.id) == ["Mara"]

    imported = store.import_entries(story.id, drafts, replace=True)
    assert [entry.name for entry in imported] == names(store, story.id) == ["Old Mara", "Brine"]
    [fact] = store.facts_on_branch(story.id, None)
    assert (fact.text, fact.from_paragraph, fact.until_paragraph, fact.entry_id) == (
        "Salt.", 2, 9, imported[1].id,
    )


def test_writers_naming_entries_at_once_cannot_both_take_a_name(database, story):
    # Several processes' writers on one story: the story row's lock makes them queue.
    stores = [open_store(database) for _ in range(4)]
    start = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def add(store: SqlStore) -> None:
        start.wait()
        try:
            store.add_entry(story.id, name="Mara", kind="character")
            outcomes.append("added")
        except BibleError:
            outcomes.append("refused")

    threads = [threading.Thread(target=add, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()

    assert sorted(outcomes) == ["added", "refused", "refused", "refused"]


# ---- chapters ----------------------------------------------------------------------------


def test_chapters_on_a_branch_come_in_story_order_with_their_first_paragraph(store: SqlStore, story):
    first, second, third, fourth = write_chain(store, story.id, ["1.", "2.", "3.", "4."])
    opening = store.add_chapter(story.id, title="Opening")
    later = store.add_chapter(story.id, title="The Storm", start_step_id=third.id, summary="Rain.")
    middle = store.add_chapter(story.id, title="Middle", start_step_id=second.id)
    [elsewhere] = write_chain(store, story.id, ["2, otherwise."], parent_id=first.id)
    store.add_chapter(story.id, title="Elsewhere", start_step_id=elsewhere.id)

    on_branch = store.chapters_on_branch(story.id, fourth.id)
    assert [(chapter.title, number) for chapter, number in on_branch] == [
        ("Opening", 1), ("Middle", 2), ("The Storm", 3),
    ]
    assert [c.title for c in store.list_chapters(story.id)] == ["Opening", "The Storm", "Middle", "Elsewhere"]
    assert [(c.title, n) for c, n in store.chapters_on_branch(story.id, None)] == [("Opening", 1)]

    store.delete_paragraph(second.id)  # Middle now starts at the next live paragraph
    assert [(c.title, n) for c, n in store.chapters_on_branch(story.id, fourth.id)] == [
        ("Opening", 1), ("Middle", 2), ("The Storm", 2),
    ]

    closed = store.update_chapter(later.id, summary="The storm breaks.", closed=True, title=" Storm ")
    assert (closed.title, closed.summary, closed.closed) == ("Storm", "The storm breaks.", True)
    assert store.get_chapter(later.id) == closed
    store.remove_chapter(middle.id)
    assert [c.title for c in store.list_chapters(story.id)] == ["Opening", "Storm", "Elsewhere"]
    assert opening.start_step_id is None


def test_two_chapters_cannot_start_at_one_paragraph(store: SqlStore, story):
    [step, other] = write_chain(store, story.id, ["1.", "2."])
    store.add_chapter(story.id, title="One", start_step_id=step.id)
    second = store.add_chapter(story.id, title="Two", start_step_id=other.id)

    with pytest.raises(Exception, match="'One' already starts at that paragraph"):
        store.add_chapter(story.id, title="Again", start_step_id=step.id)
    with pytest.raises(Exception, match="'One' already starts at that paragraph"):
        store.update_chapter(second.id, start_step_id=step.id)
    store.add_chapter(story.id, title="Prologue")
    with pytest.raises(Exception, match="'Prologue' already starts"):
        store.add_chapter(story.id, title="Prologue again")
    assert [c.title for c in store.list_chapters(story.id)] == ["One", "Two", "Prologue"]
