"""The tree of steps: committing, walking a branch, moving the head, editing and deleting."""

from __future__ import annotations

import numpy as np
import pytest

from longyarn.recurrent_core.errors import StoryNotFound
from longyarn.storage import SqlStore

from .helpers import EMBEDDING_MODEL, insert_steps, new_step, vector, write_chain


def paragraphs(steps) -> list[str]:
    return [step.paragraph for step in steps]


def test_committed_steps_form_the_branch_in_order(store: SqlStore, story):
    written = write_chain(store, story.id, ["First.", "Second.", "Third."])

    branch = store.branch(story.id)

    assert paragraphs(branch) == ["First.", "Second.", "Third."]
    assert branch == written
    assert store.get_story(story.id).head_step_id == written[-1].id
    assert store.count_steps(story.id) == 3


def test_a_step_keeps_everything_the_engine_gave_it(store: SqlStore, story):
    step = store.commit_step(
        new_step(
            story.id, None, "The tide came in.",
            instruction="Open at dawn.", short_term_memory="Mara waits.",
            memory_reason="the tide matters", next_instructions=("a", "b", "c"),
            backend="local", model="rwkv7-demo", fallbacks=("planner: reused old plans",),
            branch_owner="reader-7",
        ),
        embedding=vector(1), embedding_model=EMBEDDING_MODEL,
    )

    fetched = store.get_step(step.id)

    assert fetched == step
    assert (fetched.instruction, fetched.short_term_memory, fetched.memory_reason) == (
        "Open at dawn.", "Mara waits.", "the tide matters",
    )
    assert fetched.next_instructions == ("a", "b", "c")
    assert (fetched.backend, fetched.model) == ("local", "rwkv7-demo")
    assert fetched.fallbacks == ("planner: reused old plans",)
    assert fetched.branch_owner == "reader-7"
    assert fetched.parent_id is None and fetched.story_id == story.id


def test_undo_and_redo_move_the_head_and_keep_the_steps(store: SqlStore, story):
    first, second, third = write_chain(store, story.id, ["One.", "Two.", "Three."])

    store.set_head(story.id, second.id)  # undo
    assert paragraphs(store.branch(story.id)) == ["One.", "Two."]
    assert store.count_steps(story.id) == 2

    store.set_head(story.id, third.id)  # redo
    assert paragraphs(store.branch(story.id)) == ["One.", "Two.", "Three."]

    store.set_head(story.id, None)  # back to the empty page
    assert store.branch(story.id) == [] and store.count_steps(story.id) == 0


def test_a_retry_makes_a_sibling_branch_and_both_stay_reachable(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    retry = store.commit_step(
        new_step(story.id, first.id, "Two, told differently."),
        embedding=vector(9), embedding_model=EMBEDDING_MODEL,
    )

    assert paragraphs(store.branch(story.id)) == ["One.", "Two, told differently."]
    assert paragraphs(store.branch(story.id, second.id)) == ["One.", "Two."]
    assert store.children(story.id, first.id) == [second, retry]  # oldest first
    assert store.children(story.id, None) == [first]


def test_commit_without_moving_the_head_leaves_the_branch_alone(store: SqlStore, story):
    (first,) = write_chain(store, story.id, ["One."])

    alternative = store.commit_step(
        new_step(story.id, first.id, "A draft."),
        embedding=vector(3), embedding_model=EMBEDDING_MODEL, move_head=False,
    )

    assert store.get_story(story.id).head_step_id == first.id
    assert store.children(story.id, first.id) == [alternative]


def test_head_must_be_a_step_of_the_same_story(store: SqlStore, story):
    other = store.create_story(title="Other", premise="p", genre="g", outline="")
    (foreign,) = write_chain(store, other.id, ["Elsewhere."])
    (own,) = write_chain(store, story.id, ["Here."])

    with pytest.raises(StoryNotFound, match=foreign.id):
        store.set_head(story.id, foreign.id)
    with pytest.raises(StoryNotFound, match=foreign.id):
        store.branch(story.id, foreign.id)
    with pytest.raises(StoryNotFound, match=foreign.id):
        store.children(story.id, foreign.id)

    assert store.get_story(story.id).head_step_id == own.id


def test_editing_a_paragraph_replaces_text_and_embedding_and_bumps_memory(store: SqlStore, story):
    first, second = write_chain(store, story.id, ["One.", "Two."])
    version_before = store.memory_version(story.id)
    new_vector = vector(42)

    edited = store.edit_paragraph(
        second.id, "Two, rewritten by hand.", embedding=new_vector, embedding_model=EMBEDDING_MODEL
    )

    assert edited.paragraph == "Two, rewritten by hand."
    assert paragraphs(store.branch(story.id)) == ["One.", "Two, rewritten by hand."]
    version, entries, matrix = store.memory_vectors(story.id, EMBEDDING_MODEL)
    assert version == version_before + 1
    assert [entry.text for entry in entries] == ["One.", "Two, rewritten by hand."]
    np.testing.assert_array_equal(matrix[1], new_vector)
    assert len(entries) == 2  # replaced, not added


def test_deleting_a_paragraph_hides_it_but_keeps_the_tree(store: SqlStore, story):
    first, second, third = write_chain(store, story.id, ["One.", "Two.", "Three."])
    version_before = store.memory_version(story.id)

    store.delete_paragraph(second.id)

    assert paragraphs(store.branch(story.id)) == ["One.", "Three."]
    assert store.count_steps(story.id) == 2
    assert store.get_step(third.id).parent_id == second.id  # the tree holds
    version, entries, matrix = store.memory_vectors(story.id, EMBEDDING_MODEL)
    assert version == version_before + 1
    assert [entry.step_id for entry in entries] == [first.id, third.id]
    assert matrix.shape == (2, 8)
    assert store.children(story.id, first.id) == []


def test_a_persons_edit_of_short_term_memory_is_kept(store: SqlStore, story):
    (step,) = write_chain(store, story.id, ["One."])

    updated = store.update_short_term_memory(step.id, "Mara knows the door is a lie.")

    assert updated.short_term_memory == "Mara knows the door is a lie."
    assert store.branch(story.id)[-1].short_term_memory == "Mara knows the door is a lie."
    assert updated.paragraph == "One."


def test_changes_to_unknown_steps_say_which_step(store: SqlStore, story):
    for call in (
        lambda: store.get_step("missing"),
        lambda: store.delete_paragraph("missing"),
        lambda: store.update_short_term_memory("missing", "x"),
        lambda: store.edit_paragraph(
            "missing", "x", embedding=vector(1), embedding_model=EMBEDDING_MODEL
        ),
    ):
        with pytest.raises(StoryNotFound, match="'missing'"):
            call()


def test_a_ten_thousand_step_branch_comes_back_whole_and_in_order(store: SqlStore, story):
    length = 10_000
    ids = [f"{index:032x}" for index in range(length)]
    step = new_step(story.id, None, "")
    rows = [
        dict(
            id=ids[index], story_id=story.id, parent_id=ids[index - 1] if index else None,
            instruction=step.instruction, paragraph=f"Paragraph {index}.",
            short_term_memory="", memory_reason="", next_instructions=["a", "b", "c"],
            backend="openai", model="gpt-test", fallbacks=[],
            created_at=story.created_at, deleted=index % 1000 == 999, branch_owner=None,
        )
        for index in range(length)
    ]
    insert_steps(store, rows)
    store.set_head(story.id, ids[-1])

    branch = store.branch(story.id)

    def kept(up_to: int) -> list[str]:
        return [f"Paragraph {index}." for index in range(up_to) if index % 1000 != 999]

    assert paragraphs(branch) == kept(length)
    assert store.count_steps(story.id) == len(kept(length))
    assert paragraphs(store.branch(story.id, ids[4_998])) == kept(4_999)
