"""The bible's proposed updates in storage: the writers' queue outlives a session, keeps its
order, and shows each branch its own. Each test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from longyarn.recurrent_core.bible import KeptUpdate
from longyarn.recurrent_core.errors import BibleError, InvalidInput
from longyarn.storage import SqlStore
from longyarn.storage.models import ProposedBibleUpdateRow

from .helpers import write_chain


def kept(update_id: str, step_id: str | None, text: str) -> KeptUpdate:
    return KeptUpdate(update_id, step_id, {"kind": "new_fact", "entry_name": "Mara", "text": text})


def waiting_texts(store: SqlStore, story_id: str, head: str | None) -> list[str]:
    return [update.update["text"] for update in store.waiting_updates(story_id, head)]


def test_waiting_updates_come_back_in_the_order_they_arrived_until_decided(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    store.keep_proposed_updates(story.id, [kept("u1", first.id, "Mara sails."), kept("u2", first.id, "Mara sings.")])
    store.keep_proposed_updates(story.id, [kept("u3", second.id, "Mara sleeps.")])
    assert waiting_texts(store, story.id, second.id) == ["Mara sails.", "Mara sings.", "Mara sleeps."]

    store.decide_proposed_update("u2", "rejected")
    store.decide_proposed_update("u1", "accepted")
    store.decide_proposed_update("u3", None, "The story bible has no entry called 'Mara'.")
    [left] = store.waiting_updates(story.id, second.id)
    assert (left.id, left.problem) == ("u3", "The story bible has no entry called 'Mara'.")

    store.decide_proposed_update("u1", None)  # the acceptance undone: it waits again, in its place
    assert waiting_texts(store, story.id, second.id) == ["Mara sails.", "Mara sleeps."]


def test_each_branch_sees_the_updates_of_its_own_paragraphs(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    [sibling] = write_chain(store, story.id, ["Two, otherwise."], parent_id=first.id)
    store.keep_proposed_updates(story.id, [
        kept("a", first.id, "From one."), kept("b", second.id, "From two."), kept("c", sibling.id, "From the other."),
        kept("d", None, "From the writer."),
    ])
    assert waiting_texts(store, story.id, second.id) == ["From one.", "From two.", "From the writer."]
    assert waiting_texts(store, story.id, sibling.id) == ["From one.", "From the other.", "From the writer."]
    assert waiting_texts(store, story.id, None) == ["From the writer."]
    store.delete_paragraph(second.id)
    assert waiting_texts(store, story.id, first.id) == ["From one.", "From the writer."]


def test_deleting_the_story_deletes_its_proposed_updates(store: SqlStore, story):
    [step] = write_chain(store, story.id, ["One."])
    store.keep_proposed_updates(story.id, [kept("u1", step.id, "Mara sails.")])
    store.delete_story(story.id)
    with store._read() as session:
        assert session.scalar(select(func.count()).select_from(ProposedBibleUpdateRow)) == 0


def test_a_bad_decision_or_unknown_update_is_one_sentence(store: SqlStore, story):
    store.keep_proposed_updates(story.id, [kept("u1", None, "Mara sails.")])
    with pytest.raises(InvalidInput, match="accepted or rejected, not 'maybe'"):
        store.decide_proposed_update("u1", "maybe")
    with pytest.raises(BibleError, match="No proposed bible update with id 'nope'"):
        store.decide_proposed_update("nope", "accepted")
    assert waiting_texts(store, story.id, None) == ["Mara sails."]
