"""A step's context (what its writer was given) is stored with it, whole or not at all."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from longyarn.recurrent_core.types import RecalledMemory, SectionRecord, StepContext
from longyarn.storage import SqlStore
from longyarn.storage.models import StepContextRow

from .helpers import EMBEDDING_MODEL, new_step, vector, write_chain


def recorded(*recalled: RecalledMemory) -> StepContext:
    return StepContext(
        sections=(
            SectionRecord("Story frame", 40, 160, 0, "a1b2c3d4e5f60718"),
            SectionRecord("Recalled passages", 12, 49, 210, "0f1e2d3c4b5a6978"),
        ),
        recalled=recalled,
    )


def context_rows(store: SqlStore) -> int:
    with store.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(StepContextRow))


def test_a_steps_context_comes_back_with_the_recalled_memories_as_they_read_now(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["The tide came in.", "Mara found the key."])
    first_memory = store.memory_for_step(first.id)
    context = recorded(
        RecalledMemory(first_memory.id, first.id, "The tide came in.", 0.61234567, pinned=True)
    )

    step = store.commit_step(
        new_step(story.id, second.id, "The door opened.", context=context),
        embedding=vector(3), embedding_model=EMBEDDING_MODEL,
    )
    store.edit_paragraph(first.id, "The tide came in twice.", embedding=vector(4), embedding_model=EMBEDDING_MODEL)

    stored = store.step_context(step.id)
    assert stored.sections == context.sections
    [memory] = stored.recalled
    assert (memory.memory_id, memory.step_id, memory.pinned) == (first_memory.id, first.id, True)
    assert memory.score == pytest.approx(0.6123, abs=1e-4)
    assert memory.text == "The tide came in twice.", "the memory's text is read, not copied"
    assert store.step_context(second.id) is None, "a step stored without one has none"


def test_a_context_that_cannot_be_stored_stores_no_step_either(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["One."])
    version = store.memory_version(story.id)
    unstorable = StepContext(sections=(SectionRecord("Story frame", 1, 1, 0, object()),), recalled=())

    # Raised at the insert, after the step's own row: by SQLAlchemy on SQLite, by psycopg's
    # JSON adapter on PostgreSQL.
    with pytest.raises((StatementError, TypeError)):
        store.commit_step(
            new_step(story.id, first.id, "Two.", context=unstorable),
            embedding=vector(2), embedding_model=EMBEDDING_MODEL,
        )

    assert context_rows(store) == 0
    assert [s.id for s in store.branch(story.id)] == [first.id]
    assert store.children(story.id, first.id) == []
    assert store.memory_version(story.id) == version


def test_deleting_a_story_deletes_its_steps_contexts(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["One."])
    store.commit_step(
        new_step(story.id, first.id, "Two.", context=recorded()),
        embedding=vector(2), embedding_model=EMBEDDING_MODEL,
    )
    assert context_rows(store) == 1

    store.delete_story(story.id)

    assert context_rows(store) == 0
