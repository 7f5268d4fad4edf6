"""Long-term memory: vectors for recall, the version counter, pins, exclusions and search."""

from __future__ import annotations

import numpy as np
import pytest

from longyarn.recurrent_core.errors import InvalidInput, StoryNotFound
from longyarn.storage import SqlStore

from .helpers import DIM, EMBEDDING_MODEL, new_step, vector, write_chain


def test_memory_vectors_return_each_paragraphs_embedding_in_order(store: SqlStore, story):
    embeddings = [vector(seed) for seed in (11, 12, 13)]
    steps = []
    parent = None
    for text, embedding in zip(["Red.", "Green.", "Blue."], embeddings):
        parent = store.commit_step(
            new_step(story.id, parent and parent.id, text),
            embedding=embedding, embedding_model=EMBEDDING_MODEL,
        )
        steps.append(parent)

    version, entries, matrix = store.memory_vectors(story.id, EMBEDDING_MODEL)

    assert version == 3  # one bump per committed step
    assert [entry.text for entry in entries] == ["Red.", "Green.", "Blue."]
    assert [entry.step_id for entry in entries] == [step.id for step in steps]
    assert matrix.dtype == np.float32 and matrix.shape == (3, DIM)
    np.testing.assert_array_equal(matrix, np.stack(embeddings))


def test_memory_vectors_are_per_embedding_model(store: SqlStore, story):
    write_chain(store, story.id, ["One."])
    store.commit_step(
        new_step(story.id, None, "Other model."),
        embedding=vector(5, dim=3), embedding_model="another-embedder",
    )

    _, entries, matrix = store.memory_vectors(story.id, "another-embedder")
    assert [entry.text for entry in entries] == ["Other model."] and matrix.shape == (1, 3)

    _, none, empty = store.memory_vectors(story.id, "never-used")
    assert none == [] and empty.shape == (0, 0) and empty.dtype == np.float32


def test_pins_and_exclusions_are_kept_and_reported_to_recall(store: SqlStore, story):
    write_chain(store, story.id, ["The key.", "The door."])
    version, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
    key_memory, door_memory = entries

    pinned = store.set_memory_flags(key_memory.id, pinned=True)
    excluded = store.set_memory_flags(door_memory.id, excluded=True)

    assert (pinned.pinned, pinned.excluded) == (True, False)
    assert (excluded.pinned, excluded.excluded) == (False, True)
    new_version, flagged, matrix = store.memory_vectors(story.id, EMBEDDING_MODEL)
    assert new_version == version + 2  # a cached matrix must notice
    assert [(entry.text, entry.pinned, entry.excluded) for entry in flagged] == [
        ("The key.", True, False), ("The door.", False, True),
    ]
    assert matrix.shape == (2, DIM)

    # None leaves a flag as it is.
    store.set_memory_flags(door_memory.id, excluded=False)
    _, flagged, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
    assert [(entry.pinned, entry.excluded) for entry in flagged] == [(True, False), (False, False)]


def test_memory_for_step_finds_the_memory_a_paragraph_made(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    _, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)

    assert store.memory_for_step(second.id) == entries[1]
    assert store.memory_for_step(second.id).text == "Two."
    with pytest.raises(StoryNotFound, match="'missing'"):
        store.memory_for_step("missing")


def test_flags_on_an_unknown_memory_raise(store: SqlStore):
    with pytest.raises(StoryNotFound, match="'no-such-memory'"):
        store.set_memory_flags("no-such-memory", pinned=True)


def test_search_is_case_insensitive_also_beyond_ascii(store: SqlStore, story):
    write_chain(store, story.id, ["ÉLODIE opened the Door.", "The sea was calm.", "élodie slept."])

    assert [m.text for m in store.search_memories(story.id, "élodie")] == [
        "ÉLODIE opened the Door.", "élodie slept.",
    ]
    assert [m.text for m in store.search_memories(story.id, "DOOR")] == ["ÉLODIE opened the Door."]
    assert len(store.search_memories(story.id, "", limit=2)) == 2


def test_search_treats_sql_wildcards_as_plain_text(store: SqlStore, story):
    write_chain(store, story.id, ["Sales rose 50% in spring.", "Sales rose 5 points."])

    assert [m.text for m in store.search_memories(story.id, "50%")] == ["Sales rose 50% in spring."]
    assert store.search_memories(story.id, "rose_5") == []


def test_search_skips_deleted_paragraphs_but_finds_excluded_ones(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["A lantern.", "Another lantern."])
    _, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
    store.set_memory_flags(entries[0].id, excluded=True)
    store.delete_paragraph(second.id)

    found = store.search_memories(story.id, "lantern")

    assert [(m.text, m.excluded) for m in found] == [("A lantern.", True)]


def test_an_embedding_of_another_length_for_the_same_model_is_refused(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])

    with pytest.raises(InvalidInput, match="has 4 values"):
        store.commit_step(
            new_step(story.id, second.id, "Three."),
            embedding=vector(2, dim=4), embedding_model=EMBEDDING_MODEL,
        )
    with pytest.raises(InvalidInput, match="has 4 values"):
        store.edit_paragraph(
            first.id, "One again.", embedding=vector(2, dim=4), embedding_model=EMBEDDING_MODEL
        )
    assert [step.paragraph for step in store.branch(story.id)] == ["One.", "Two."]


def test_the_only_memory_may_change_length_when_edited(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["One."])

    store.edit_paragraph(
        first.id, "One.", embedding=vector(2, dim=4), embedding_model=EMBEDDING_MODEL
    )

    assert store.memory_vectors(story.id, EMBEDDING_MODEL)[2].shape == (1, 4)


def test_a_restored_paragraph_is_in_the_story_and_recalled_again(store: SqlStore, story):
    first, second, third = write_chain(store, story.id, ["A lantern.", "A ferry.", "A key."])
    store.delete_paragraph(third.id, move_head=True, new_head=second.id)
    version = store.memory_version(story.id)

    store.restore_paragraph(third.id, move_head=True)

    assert [s.paragraph for s in store.branch(story.id)] == ["A lantern.", "A ferry.", "A key."]
    assert store.get_story(story.id).head_step_id == third.id
    assert store.memory_version(story.id) > version, "recall's cache knows the memories changed"
    _, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
    assert [m.text for m in entries] == ["A lantern.", "A ferry.", "A key."]
    store.delete_paragraph(first.id)
    store.restore_paragraph(first.id)
    assert store.get_story(story.id).head_step_id == third.id, "the head stays where it was"
