"""Paragraph counts of many stories at once: what the libraries show as each story's length."""

from __future__ import annotations

from sqlalchemy import event

from longyarn.storage import SqlStore

from .helpers import EMBEDDING_MODEL, insert_steps, new_step, vector, write_chain


def make_story(store: SqlStore, title: str):
    return store.create_story(title=title, premise="p", genre="g", outline="")


def test_each_story_counts_its_current_branch_without_deleted_paragraphs(store: SqlStore):
    empty = make_story(store, "Not begun")
    plain = make_story(store, "Plain")
    write_chain(store, plain.id, ["One.", "Two.", "Three."])

    with_deletions = make_story(store, "Deleted bits")
    first, second, third, fourth = write_chain(
        store, with_deletions.id, ["One.", "Two.", "Three.", "Four."]
    )
    store.delete_paragraph(second.id)
    store.delete_paragraph(fourth.id)  # the head itself

    branched = make_story(store, "Branched")
    trunk = write_chain(store, branched.id, ["One.", "Two.", "Three.", "Four.", "Five."])
    write_chain(store, branched.id, ["Two again.", "Three again."], parent_id=trunk[0].id)
    store.commit_step(  # a reader's path under the head is not the author's branch
        new_step(branched.id, trunk[1].id, "A reader's turn.", branch_owner="r1"),
        embedding=vector(7), embedding_model=EMBEDDING_MODEL, move_head=False,
    )
    store.set_head(branched.id, trunk[1].id)  # undo back onto the first version

    emptied = make_story(store, "Undone to nothing")
    write_chain(store, emptied.id, ["Gone for now."])
    store.set_head(emptied.id, None)

    counts = store.paragraph_counts()

    stories = [empty, plain, with_deletions, branched, emptied]
    assert counts == {story.id: store.count_steps(story.id) for story in stories}
    assert counts == {story.id: len(store.branch(story.id)) for story in stories}
    assert [counts[story.id] for story in stories] == [0, 3, 2, 2, 0]


def test_only_the_named_stories_are_counted_and_unknown_ids_are_left_out(store: SqlStore):
    named, other = make_story(store, "Named"), make_story(store, "Other")
    write_chain(store, named.id, ["One.", "Two."])
    write_chain(store, other.id, ["One."])

    assert store.paragraph_counts([named.id, "no-such-story"]) == {named.id: 2}
    assert store.paragraph_counts([]) == {}


def test_a_whole_library_of_long_stories_is_counted_in_one_query(store: SqlStore):
    lengths = [1_500, 40, 0, 700]
    stories = [make_story(store, f"Story {n}") for n in range(len(lengths))]
    for number, (story, length) in enumerate(zip(stories, lengths)):
        ids = [f"{number:04x}{index:028x}" for index in range(length)]
        rows = [
            dict(
                id=ids[index], story_id=story.id, parent_id=ids[index - 1] if index else None,
                instruction="i", paragraph=f"Paragraph {index}.", short_term_memory="",
                memory_reason="", next_instructions=["a", "b", "c"], backend="openai",
                model="gpt-test", fallbacks=[], created_at=story.created_at,
                deleted=index % 100 == 99, branch_owner=None,
            )
            for index in range(length)
        ]
        if rows:
            insert_steps(store, rows)
            store.set_head(story.id, ids[-1])

    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        counts = store.paragraph_counts()
    finally:
        event.remove(store.engine, "before_cursor_execute", record)

    assert counts == {story.id: length - length // 100 for story, length in zip(stories, lengths)}
    assert counts == {story.id: store.count_steps(story.id) for story in stories}
    assert len([s for s in statements if s.lstrip().upper().startswith(("WITH", "SELECT"))]) == 1
