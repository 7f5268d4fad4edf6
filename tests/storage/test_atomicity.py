"""A step is stored whole or not at all: a failure leaves the story exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.storage import SqlStore

from .helpers import DIM, EMBEDDING_MODEL, new_step, row_counts, vector, write_chain


def snapshot(store: SqlStore, story_id: str):
    """Everything a failed commit could have touched."""
    return (
        store.get_story(story_id),
        store.branch(story_id),
        store.memory_vectors(story_id, EMBEDDING_MODEL)[:2],
        row_counts(store, story_id),
    )


@pytest.fixture
def written(store: SqlStore, story):
    steps = write_chain(store, story.id, ["One.", "Two."])
    return steps, snapshot(store, story.id)


@pytest.mark.parametrize(
    "embedding",
    [
        np.zeros(DIM, dtype=np.float64),
        np.zeros((1, DIM), dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        np.array([1.0, np.nan] * (DIM // 2), dtype=np.float32),
        [0.0] * DIM,
    ],
    ids=["float64", "2-d", "empty", "nan", "list"],
)
def test_a_bad_embedding_is_refused_and_nothing_is_stored(store, story, written, embedding):
    steps, before = written

    with pytest.raises(InvalidInput, match="nothing was saved"):
        store.commit_step(
            new_step(story.id, steps[-1].id, "Three."),
            embedding=embedding, embedding_model=EMBEDDING_MODEL,
        )

    assert snapshot(store, story.id) == before


def test_a_parent_that_does_not_exist_fails_inside_the_transaction(store, story, written):
    _, before = written

    # The memory version is bumped before the step row hits the foreign key, so this checks
    # a rollback, not an early return.
    with pytest.raises(StoryNotFound, match="'not-a-step'.*not saved") as caught:
        store.commit_step(
            new_step(story.id, "not-a-step", "Three."),
            embedding=vector(3), embedding_model=EMBEDDING_MODEL,
        )

    assert isinstance(caught.value.__cause__, IntegrityError)
    assert snapshot(store, story.id) == before


def test_a_parent_from_another_story_is_refused(store, story, written):
    _, before = written
    other = store.create_story(title="Other", premise="p", genre="g", outline="")
    (foreign,) = write_chain(store, other.id, ["Elsewhere."])
    other_before = snapshot(store, other.id)

    with pytest.raises(StoryNotFound, match=foreign.id):
        store.commit_step(
            new_step(story.id, foreign.id, "Three."),
            embedding=vector(3), embedding_model=EMBEDDING_MODEL,
        )

    assert snapshot(store, story.id) == before
    assert snapshot(store, other.id) == other_before


def test_an_embedding_length_clash_found_midway_rolls_back(store, story, written):
    steps, before = written

    with pytest.raises(InvalidInput):
        store.commit_step(
            new_step(story.id, steps[-1].id, "Three."),
            embedding=vector(3, dim=DIM + 1), embedding_model=EMBEDDING_MODEL,
        )

    assert snapshot(store, story.id) == before


def test_a_step_for_an_unknown_story_is_refused(store):
    with pytest.raises(StoryNotFound, match="'ghost'"):
        store.commit_step(
            new_step("ghost", None, "Boo."), embedding=vector(1), embedding_model=EMBEDDING_MODEL
        )


def test_the_wrong_number_of_next_instructions_is_refused(store, story, written):
    steps, before = written

    with pytest.raises(InvalidInput, match="three next instructions"):
        store.commit_step(
            new_step(story.id, steps[-1].id, "Three.", next_instructions=("only one",)),
            embedding=vector(3), embedding_model=EMBEDDING_MODEL,
        )

    assert snapshot(store, story.id) == before


def test_deleting_the_newest_paragraph_moves_the_head_back_in_the_same_transaction(store: SqlStore, written):
    (first, second), _ = written
    store.delete_paragraph(second.id, move_head=True, new_head=first.id)
    assert store.get_story(first.story_id).head_step_id == first.id
    assert [step.id for step in store.branch(first.story_id)] == [first.id]


def test_a_delete_whose_new_head_is_wrong_leaves_the_paragraph_and_the_head_as_they_were(
    store: SqlStore, story, written
):
    (first, second), before = written
    with pytest.raises(StoryNotFound):
        store.delete_paragraph(second.id, move_head=True, new_head="no-such-step")
    assert snapshot(store, story.id) == before
