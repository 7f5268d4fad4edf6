"""Long-term recall as a writer sees it: by meaning, with pins, exclusions, edits and deletes."""

from __future__ import annotations

import numpy as np

from longyarn.recurrent_core.memory import RecallIndex
from longyarn.recurrent_core.types import NewStep

PARAGRAPHS = [
    "The dragon Ysolde slept on a hoard of silver bells beneath the castle.",
    "Tomas baked rye bread before dawn in the village bakery.",
    "A storm flooded the harbour and tore the sails from the boats.",
    "Merchants argued over saffron and wool at the market.",
    "The road north climbed through pine forest to the pass.",
]


def build_story(store, embedder, paragraphs=PARAGRAPHS):
    story = store.create_story(title="T", premise="P", genre="", outline="O")
    parent, steps = None, []
    for text in paragraphs:
        step = store.commit_step(
            NewStep(story.id, parent, "go", text, "memory", "reason", ("a", "b", "c"), "test", "test"),
            embedding=embedder.embed([text])[0], embedding_model=embedder.name,
        )
        parent = step.id
        steps.append(step)
    return story, steps


def recall(index, store, embedder, story_id, query, k=2, exclude=frozenset()):
    ids = store.branch_step_ids(story_id)
    return index.recall(story_id, embedder.embed([query])[0], k=k, branch_step_ids=ids, exclude_step_ids=set(exclude))


def test_recall_finds_by_meaning_and_orders_by_score(store, embedder):
    story, steps = build_story(store, embedder)
    index = RecallIndex(store, embedder.name)
    found = recall(index, store, embedder, story.id, "a sleeping dragon guarding treasure")
    assert found[0].step_id == steps[0].id
    assert found[0].score > found[1].score
    assert np.isclose(found[0].score, float(embedder.embed([PARAGRAPHS[0]])[0] @ embedder.embed(["a sleeping dragon guarding treasure"])[0]), atol=1e-5)


def test_pinned_memories_always_come_back_and_excluded_never(store, embedder):
    story, steps = build_story(store, embedder)
    index = RecallIndex(store, embedder.name)
    market = store.memory_for_step(steps[3].id)
    dragon = store.memory_for_step(steps[0].id)
    store.set_memory_flags(market.id, pinned=True)
    store.set_memory_flags(dragon.id, excluded=True)
    found = recall(index, store, embedder, story.id, "a sleeping dragon guarding treasure", k=1)
    assert found[0].step_id == steps[3].id and found[0].pinned
    assert all(m.step_id != steps[0].id for m in found)
    assert len(found) == 2, "the pin comes on top of the k recalled by meaning"


def test_edits_and_deletes_from_anywhere_are_seen(store, embedder, db_path):
    from longyarn.storage.db import open_store

    story, steps = build_story(store, embedder)
    index = RecallIndex(store, embedder.name)
    assert recall(index, store, embedder, story.id, "bread and ovens", k=1)[0].step_id == steps[1].id

    other_process_store = open_store(str(db_path))  # another front end on the same file
    text = "Tomas abandoned baking and became a lighthouse keeper on the cliffs."
    other_process_store.edit_paragraph(steps[1].id, text, embedding=embedder.embed([text])[0], embedding_model=embedder.name)
    found = recall(index, store, embedder, story.id, "a lighthouse keeper on the cliffs", k=1)
    assert found[0].step_id == steps[1].id and found[0].text == text

    other_process_store.delete_paragraph(steps[1].id)
    found = recall(index, store, embedder, story.id, "a lighthouse keeper on the cliffs", k=5)
    assert steps[1].id not in [m.step_id for m in found]
    other_process_store.close()


def test_excluding_the_previous_paragraph_and_small_stories(store, embedder):
    story, steps = build_story(store, embedder, PARAGRAPHS[:2])
    index = RecallIndex(store, embedder.name)
    found = recall(index, store, embedder, story.id, "bakery", k=3, exclude={steps[1].id})
    assert [m.step_id for m in found] == [steps[0].id]
    empty = store.create_story(title="E", premise="P", genre="", outline="O")
    assert index.recall(empty.id, embedder.embed(["x"])[0], k=3, branch_step_ids=[]) == []


def test_recall_leaves_numpys_blas_thread_setting_as_it_found_it(store, embedder):
    # Recall runs its product on one BLAS thread (a spinning second one slows the embedder);
    # a program using longyarn's API must get its own numpy setting back.
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["internal_api"] == "openblas"]

    story, _ = build_story(store, embedder)
    index = RecallIndex(store, embedder.name)
    before = blas_threads()
    found = recall(index, store, embedder, story.id, "a lighthouse")
    assert found and blas_threads() == before
