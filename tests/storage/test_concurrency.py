"""Several writers on one database: the TUI, the reader server and batch share one.

On SQLite they queue for the file's write lock; on PostgreSQL each commit's one-UPDATE bump of
the story row makes them queue for that row, so no count is lost either way.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from longyarn.storage import SqlStore, open_store

from .helpers import EMBEDDING_MODEL, new_step, vector, write_chain

STEPS_PER_WRITER = 25


@pytest.mark.sqlite_only("WAL, busy_timeout and the other pragmas are SQLite's own")
def test_every_connection_uses_wal_and_the_agreed_settings(store: SqlStore):
    with store.engine.connect() as connection:
        def pragma(name: str):
            return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 10_000
        assert pragma("synchronous") == 1  # NORMAL
    assert store.integrity_check() == "ok"


def write_story(database: str, story_id: str, writer: int, start: threading.Barrier | None) -> None:
    """Commit a chain of steps to one story, each read back right after it is written."""
    with open_store(database) as store:
        if start is not None:
            start.wait()
        parent_id = None
        for index in range(STEPS_PER_WRITER):
            step = store.commit_step(
                new_step(story_id, parent_id, f"Writer {writer}, paragraph {index}."),
                embedding=vector(writer * 1000 + index),
                embedding_model=EMBEDDING_MODEL,
                move_head=False,  # both writers share one story; the head is not theirs
            )
            assert store.count_steps(story_id, step.id) == index + 1
            parent_id = step.id


def assert_both_chains_are_whole(database: Path | str, story_id: str, writers: int) -> None:
    with open_store(database) as store:
        roots = store.children(story_id, None)
        assert len(roots) == writers
        for root in roots:
            writer = root.paragraph.split(",")[0]
            chain = [root]
            while children := store.children(story_id, chain[-1].id):
                (child,) = children
                chain.append(child)
            assert [step.paragraph for step in chain] == [
                f"{writer}, paragraph {index}." for index in range(STEPS_PER_WRITER)
            ]
        version, entries, _ = store.memory_vectors(story_id, EMBEDDING_MODEL)
        assert version == len(entries) == writers * STEPS_PER_WRITER
        assert store.integrity_check() == "ok"


def test_two_stores_in_two_threads_write_without_locking_errors(database, store, story):
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            write_story(str(database), story.id, writer, start)
        except BaseException as error:  # surfaced below; a thread cannot fail the test itself
            errors.append(error)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert_both_chains_are_whole(database, story.id, writers=2)


def test_two_processes_write_to_one_database_without_locking_errors(database, store, story):
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, like a second CLI
    start = context.Barrier(2)
    processes = [
        context.Process(target=write_story, args=(str(database), story.id, writer, start))
        for writer in (1, 2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0, 0]
    assert_both_chains_are_whole(database, story.id, writers=2)


def test_edits_flags_and_deletes_of_one_paragraph_at_once_all_succeed(database, store, story):
    # The TUI edits a paragraph while another window pins its memory and a third deletes
    # and edits it: every change lands, none fails on a lock (no deadlock on PostgreSQL).
    (step,) = write_chain(store, story.id, ["The key."])
    memory_id = store.memory_for_step(step.id).id
    rounds = 20
    errors: list[BaseException] = []

    def edit(opened: SqlStore, index: int) -> None:
        opened.edit_paragraph(
            step.id, f"The key, take {index}.", embedding=vector(index), embedding_model=EMBEDDING_MODEL
        )

    def flag(opened: SqlStore, index: int) -> None:
        opened.set_memory_flags(memory_id, pinned=index % 2 == 0)

    def note(opened: SqlStore, index: int) -> None:
        opened.update_short_term_memory(step.id, f"Note {index}.")
        opened.delete_paragraph(step.id)

    def run(change) -> None:  # noqa: ANN001
        try:
            with open_store(database) as opened:
                start.wait()
                for index in range(rounds):
                    change(opened, index)
        except BaseException as error:  # surfaced below; a thread cannot fail the test itself
            errors.append(error)

    start = threading.Barrier(3)
    threads = [threading.Thread(target=run, args=(change,)) for change in (edit, flag, note)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert store.memory_version(story.id) == 1 + 3 * rounds
    assert store.get_step(step.id).paragraph == f"The key, take {rounds - 1}."
