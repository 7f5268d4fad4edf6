"""The schema migrates itself: old databases keep their data, models and migrations agree."""

from __future__ import annotations

import io
import multiprocessing
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from longyarn.recurrent_core.errors import LongyarnError
from longyarn.recurrent_core.types import SectionRecord, StepContext
from longyarn.storage import SqlStore, open_store
from longyarn.storage.db import alembic_config, current_revisions, schema_heads, upgrade
from longyarn.storage.models import Base
from longyarn.storage.sessions import create_store_engine, database_url

from .helpers import EMBEDDING_MODEL, new_step, vector


def first_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_base()


def test_the_migration_history_has_an_upgrade_to_test(db_path):
    # Otherwise the data-keeping test below would upgrade nothing.
    assert first_revision() not in schema_heads()


def test_a_database_from_the_first_revision_keeps_its_data_when_upgraded(empty_database):
    engine = create_store_engine(database_url(empty_database))
    upgrade(engine, first_revision())
    assert current_revisions(engine) == (first_revision(),)
    now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    # Rows as the first schema knew them: plain SQL, not today's models.
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO stories (id, title, premise, genre, outline, settings, head_step_id,"
                " readable, reader_may_extend, memory_version, created_at, updated_at) VALUES"
                " ('0ld5t0ry0000', 'Old', 'An old premise.', 'gothic', '', '{\"k\": 2}', NULL,"
                " TRUE, FALSE, 1, :now, :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO steps (id, story_id, parent_id, instruction, paragraph,"
                " short_term_memory, memory_reason, next_instructions, backend, model, fallbacks,"
                " created_at, deleted) VALUES ('s1', '0ld5t0ry0000', NULL, 'Begin.',"
                " 'It was a dark night.', 'Night.', 'start', '[\"a\", \"b\", \"c\"]', 'openai',"
                " 'gpt-old', '[]', :now, FALSE)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO memories (id, story_id, step_id, text, embedding, dim,"
                " embedding_model, pinned, excluded, created_at) VALUES ('m1', '0ld5t0ry0000',"
                " 's1', 'It was a dark night.', :embedding, 8, :model, TRUE, FALSE, :now)"
            ),
            {"embedding": vector(7).tobytes(), "model": EMBEDDING_MODEL, "now": now},
        )
        connection.execute(text("UPDATE stories SET head_step_id = 's1'"))
    engine.dispose()

    with open_store(empty_database) as store:  # upgrades to the newest schema on the way
        assert current_revisions(store.engine) == schema_heads()
        story = store.get_story("0ld5t0ry0000")
        (step,) = store.branch(story.id)
        version, entries, matrix = store.memory_vectors(story.id, EMBEDDING_MODEL)

    assert (story.title, story.readable, story.settings, story.created_at) == (
        "Old", True, {"k": 2}, now,
    )
    assert (step.paragraph, step.next_instructions, step.branch_owner) == (
        "It was a dark night.", ("a", "b", "c"), None,
    )
    assert version == 1 and [(e.id, e.pinned) for e in entries] == [("m1", True)]
    assert (matrix[0] == vector(7)).all()


def test_a_database_from_revision_0003_with_readers_keeps_everything_when_upgraded(empty_database):
    """The last schema before step contexts: its stories, steps, memories and reader data all
    survive, old paragraphs simply have no recorded context, and new ones get one."""
    engine = create_store_engine(database_url(empty_database))
    upgrade(engine, "0003")
    now = datetime(2024, 9, 1, 8, 30, tzinfo=timezone.utc)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO stories (id, title, premise, genre, outline, settings, head_step_id,"
                " readable, reader_may_extend, memory_version, created_at, updated_at) VALUES"
                " ('st0ry0000003', 'Ferry', 'A ferryman.', 'fable', 'The river.', '{}', NULL,"
                " TRUE, TRUE, 2, :now, :now)"
            ),
            {"now": now},
        )
        for step_id, parent, paragraph, owner in (
            ("a1", None, "The ferry left at dusk.", None),
            ("a2", "a1", "A reader's ghost came aboard.", "reader-1"),
        ):
            connection.execute(
                text(
                    "INSERT INTO steps (id, story_id, parent_id, instruction, paragraph,"
                    " short_term_memory, memory_reason, next_instructions, backend, model,"
                    " fallbacks, created_at, deleted, branch_owner) VALUES (:id, 'st0ry0000003',"
                    " :parent, 'Go on.', :paragraph, 'Dusk.', 'r', '[\"a\", \"b\", \"c\"]',"
                    " 'openai', 'gpt-old', '[]', :now, FALSE, :owner)"
                ),
                {"id": step_id, "parent": parent, "paragraph": paragraph, "owner": owner, "now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO memories (id, story_id, step_id, text, embedding, dim,"
                    " embedding_model, pinned, excluded, created_at) VALUES (:id, 'st0ry0000003',"
                    " :step, :text, :embedding, 8, :model, FALSE, FALSE, :now)"
                ),
                {"id": f"m-{step_id}", "step": step_id, "text": paragraph,
                 "embedding": vector(len(step_id) + ord(step_id[1])).tobytes(),
                 "model": EMBEDDING_MODEL, "now": now},
            )
        connection.execute(text("UPDATE stories SET head_step_id = 'a1'"))
        connection.execute(
            text("INSERT INTO readers (id, name, token_hash, created_at) VALUES ('reader-1', 'Ada', :hash, :now)"),
            {"hash": "ab" * 32, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO reader_progress (reader_id, story_id, step_id, updated_at)"
                " VALUES ('reader-1', 'st0ry0000003', 'a2', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO reader_places (id, reader_id, story_id, step_id, kind, name, created_at)"
                " VALUES ('p1', 'reader-1', 'st0ry0000003', 'a2', 'slot', 'before the ghost', :now)"
            ),
            {"now": now},
        )
    engine.dispose()

    with open_store(empty_database) as store:
        assert current_revisions(store.engine) == schema_heads()
        story = store.get_story("st0ry0000003")
        assert (story.title, story.readable, story.reader_may_extend, story.head_step_id) == (
            "Ferry", True, True, "a1",
        )
        assert [s.paragraph for s in store.branch(story.id)] == ["The ferry left at dusk."]
        [reader_step] = store.reader_children(story.id, "a1", "reader-1")
        assert (reader_step.paragraph, reader_step.branch_owner) == ("A reader's ghost came aboard.", "reader-1")
        version, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
        assert version == 2 and {e.id for e in entries} == {"m-a1", "m-a2"}
        assert store.reader_position("reader-1", story.id).step_id == "a2"
        assert [p.name for p in store.reader_places("reader-1", story.id, "slot")] == ["before the ghost"]
        assert store.reader_with_token("reader-1", "ab" * 32).name == "Ada"
        assert store.step_context("a1") is None, "never recorded, and not invented"

        context = StepContext((SectionRecord("Story frame", 9, 36, 0, "0123456789abcdef"),), ())
        step = store.commit_step(
            new_step(story.id, "a1", "The ferry reached the far bank.", context=context),
            embedding=vector(9), embedding_model=EMBEDDING_MODEL,
        )
        assert store.step_context(step.id) == context
        assert store.integrity_check() == "ok"


def test_models_and_migrations_describe_the_same_schema(store: SqlStore):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)

    assert differences == []


def test_every_migration_can_be_undone_and_redone(empty_database):
    from alembic import command

    engine = create_store_engine(database_url(empty_database))
    upgrade(engine)
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        connection.commit()
    assert current_revisions(engine) == ()
    upgrade(engine)
    assert current_revisions(engine) == schema_heads()
    engine.dispose()


def test_the_migrations_also_build_the_schema_on_postgresql():
    # Rendered as SQL (Alembic's offline mode), so no server is needed to catch SQLite-isms.
    from alembic import command

    rendered = io.StringIO()
    config = alembic_config()
    config.output_buffer = rendered
    config.set_main_option("sqlalchemy.url", "postgresql://")
    command.upgrade(config, "head", sql=True)
    sql = rendered.getvalue()

    assert "CREATE TABLE stories" in sql and "BYTEA" in sql and "TIMESTAMP WITH TIME ZONE" in sql
    assert "ALTER TABLE stories ADD CONSTRAINT fk_stories_head_step_steps" in sql
    assert "ALTER TABLE steps ADD COLUMN branch_owner" in sql
    assert "CREATE TABLE step_contexts" in sql
    assert "_alembic_tmp" not in sql  # no SQLite table rebuilds on a database that can ALTER


def test_opening_twice_is_harmless(empty_database):
    with open_store(empty_database) as store:
        story = store.create_story(title="Once", premise="p", genre="g", outline="")
    with open_store(empty_database) as store:
        assert store.get_story(story.id).title == "Once"
        assert current_revisions(store.engine) == schema_heads()


def open_when_all_are_ready(database: str, ready) -> None:
    ready.wait()
    open_store(database).close()


def test_processes_opening_a_new_database_at_once_all_get_the_newest_schema(empty_database):
    # Several `longyarn batch` runs started together on a database nobody has opened yet.
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(3)
    processes = [
        context.Process(target=open_when_all_are_ready, args=(str(empty_database), ready))
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)

    assert [process.exitcode for process in processes] == [0, 0, 0]
    with open_store(empty_database) as store:
        assert current_revisions(store.engine) == schema_heads()


def test_opening_waits_for_another_process_writing_a_file_not_yet_in_wal_mode(db_path):
    # What a second process meets while the first switches a new file to WAL: SQLite says
    # "database is locked" at once there, without waiting its busy timeout.
    db_path.parent.mkdir(parents=True, exist_ok=True)
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other_program (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other_program VALUES (1)")
    threading.Timer(0.5, other.execute, ("COMMIT",)).start()
    try:
        with open_store(db_path) as store:
            assert current_revisions(store.engine) == schema_heads()
        assert other.execute("SELECT x FROM other_program").fetchall() == [(1,)]
    finally:
        other.close()


def test_a_database_from_a_newer_longyarn_is_left_untouched(empty_database):
    with open_store(empty_database) as store:
        with store.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))

    with pytest.raises(LongyarnError, match="from_the_future.*left untouched"):
        open_store(empty_database)


def test_a_memory_only_database_works_for_scratch_use():
    with open_store(":memory:") as store:
        story = store.create_story(title="Scratch", premise="p", genre="g", outline="")
        assert store.get_story(story.id).title == "Scratch"
        assert "memory" in store.location
