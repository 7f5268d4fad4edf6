"""Stories: create, read, list, change and delete; and the errors a person sees."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.storage import SqlStore, open_store
from longyarn.storage.sessions import describe_location

from .helpers import row_counts, write_chain


def test_a_new_story_can_be_read_back_with_every_field(store: SqlStore):
    created = store.create_story(
        title="Salt", premise="Two sisters run a salt mine.", genre="literary",
        outline="Winter, then spring.", settings={"temperature": 0.8, "jrt_repeats": 2},
        readable=True, reader_may_extend=True,
    )

    fetched = store.get_story(created.id)

    assert fetched == created
    assert (fetched.title, fetched.premise, fetched.genre, fetched.outline) == (
        "Salt", "Two sisters run a salt mine.", "literary", "Winter, then spring.",
    )
    assert fetched.settings == {"temperature": 0.8, "jrt_repeats": 2}
    assert fetched.readable and fetched.reader_may_extend
    assert fetched.head_step_id is None
    assert fetched.created_at.tzinfo is not None


def test_story_ids_are_short_distinct_and_typeable(store: SqlStore):
    ids = {
        store.create_story(title=f"t{i}", premise="p", genre="g", outline="").id
        for i in range(20)
    }

    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{12}", story_id) for story_id in ids)


def test_list_puts_the_most_recently_edited_story_first(store: SqlStore):
    older = store.create_story(title="Older", premise="p", genre="g", outline="")
    newer = store.create_story(title="Newer", premise="p", genre="g", outline="")
    assert [s.id for s in store.list_stories()] == [newer.id, older.id]

    time.sleep(0.002)  # timestamps must differ for "most recent" to mean anything
    write_chain(store, older.id, ["The older story moves on."])

    assert [s.id for s in store.list_stories()] == [older.id, newer.id]


def test_times_come_back_in_utc_whatever_the_servers_time_zone(store: SqlStore, story):
    # The test PostgreSQL server runs on Auckland time (tests/postgres_server.py).
    (step,) = write_chain(store, story.id, ["One."])

    read_back = [
        store.branch(story.id)[0].created_at,
        store.get_step(step.id).created_at,
        store.list_stories()[0].updated_at,
        store.get_story(story.id).created_at,
    ]

    assert [moment.utcoffset() for moment in read_back] == [timedelta(0)] * 4
    assert read_back[0] == step.created_at and read_back[3] == story.created_at


def test_update_changes_only_the_named_fields(store: SqlStore, story):
    updated = store.update_story(story.id, title="The Drowned Lighthouse", settings={"k": 1})

    assert updated.title == "The Drowned Lighthouse"
    assert updated.settings == {"k": 1}
    assert updated.premise == story.premise
    assert updated.updated_at >= story.updated_at
    assert store.get_story(story.id) == updated


def test_update_refuses_fields_a_person_cannot_edit(store: SqlStore, story):
    with pytest.raises(InvalidInput, match="head_step_id"):
        store.update_story(story.id, head_step_id="abc", title="changed")

    assert store.get_story(story.id) == story


def test_delete_removes_the_story_its_steps_and_memories(store: SqlStore, story):
    kept = store.create_story(title="Kept", premise="p", genre="g", outline="")
    write_chain(store, story.id, ["One.", "Two."])
    write_chain(store, kept.id, ["Kept one."])

    store.delete_story(story.id)

    with pytest.raises(StoryNotFound):
        store.get_story(story.id)
    assert row_counts(store, story.id) == (0, 0)
    assert [s.id for s in store.list_stories()] == [kept.id]
    assert row_counts(store, kept.id) == (1, 1)


def test_unknown_story_message_names_the_id_and_database(store: SqlStore, database):
    with pytest.raises(StoryNotFound) as caught:
        store.get_story("abc")

    message = str(caught.value)
    assert "'abc'" in message and str(database) in message and "longyarn write" in message
    assert message.count(".") >= 1 and "\n" not in message


def test_unknown_story_everywhere_raises_story_not_found(store: SqlStore):
    for call in (
        lambda: store.update_story("nope", title="x"),
        lambda: store.delete_story("nope"),
        lambda: store.branch("nope"),
        lambda: store.count_steps("nope"),
        lambda: store.children("nope", None),
        lambda: store.set_head("nope", None),
        lambda: store.memory_version("nope"),
        lambda: store.memory_vectors("nope", "m"),
        lambda: store.search_memories("nope", "x"),
        lambda: store.get_step("nope"),
    ):
        with pytest.raises(StoryNotFound):
            call()


def test_messages_never_show_a_database_password():
    url = make_url("postgresql+psycopg://writer:hunter2@db.example/longyarn")

    location = describe_location(url)

    assert "hunter2" not in location
    assert "writer" in location and "db.example/longyarn" in location


def test_stories_survive_closing_and_reopening_the_file(database):
    with open_store(database) as first:
        story = first.create_story(title="Persist", premise="p", genre="g", outline="")
        write_chain(first, story.id, ["Still here."])

    with open_store(database) as second:
        assert [step.paragraph for step in second.branch(story.id)] == ["Still here."]
