"""Undo of a removal puts an entry or a fact back as it was, ids and all, facts of every branch
with it. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from longyarn.recurrent_core.bible import FactDraft
from longyarn.recurrent_core.errors import BibleError
from longyarn.storage import SqlStore

from .helpers import write_chain


def test_a_removed_entry_comes_back_with_its_ids_and_the_facts_of_every_branch(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    [sibling] = write_chain(store, story.id, ["Two, told otherwise."], parent_id=first.id)
    mara = store.add_entry(story.id, name="Mara", kind="character", aliases=["the captain"],
                           facts=[FactDraft("Mara is a sailor.", 1, 2)])
    store.add_fact(mara.id, "Mara found a key.", from_paragraph=2, step_id=second.id)
    store.add_fact(mara.id, "Mara lost the key.", from_paragraph=2, step_id=sibling.id)
    every_fact = store.entry_facts(mara.id)
    assert [fact.text for fact in every_fact] == ["Mara is a sailor.", "Mara found a key.", "Mara lost the key."]

    store.remove_entry(mara.id)
    assert store.list_entries(story.id) == []
    restored = store.restore_entry(mara, every_fact)

    assert restored == mara and store.get_entry(mara.id) == mara
    assert store.entry_facts(mara.id) == every_fact
    assert [f.text for f in store.facts_on_branch(story.id, sibling.id)] == ["Mara is a sailor.", "Mara lost the key."]


def test_an_entry_cannot_come_back_twice_or_onto_a_name_taken_meanwhile(store: SqlStore, story):
    mara = store.add_entry(story.id, name="Mara", kind="character")
    with pytest.raises(BibleError, match="is in the story's bible already, so nothing was changed"):
        store.restore_entry(mara)
    store.remove_entry(mara.id)
    store.add_entry(story.id, name="MARA", kind="place")
    with pytest.raises(BibleError, match="'Mara' is already the name of the place 'MARA'"):
        store.restore_entry(mara)
    assert [entry.name for entry in store.list_entries(story.id)] == ["MARA"]


def test_a_removed_fact_comes_back_as_it_was(store: SqlStore, story):
    [step] = write_chain(store, story.id, ["One."])
    mara = store.add_entry(story.id, name="Mara", kind="character")
    fact = store.add_fact(mara.id, "Mara is a sailor.", from_paragraph=1, until_paragraph=4, step_id=step.id)
    store.remove_fact(fact.id)
    assert store.entry_facts(mara.id) == []

    assert store.restore_fact(fact) == fact
    assert store.facts_on_branch(story.id, step.id) == [fact]
    with pytest.raises(BibleError, match="is in the story's bible already"):
        store.restore_fact(fact)
