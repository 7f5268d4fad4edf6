"""Revision 0006 adds the story bible and chapters: a database at 0005 keeps all it held."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from longyarn.recurrent_core.bible import FactDraft, KeptUpdate
from longyarn.storage import open_store
from longyarn.storage.db import alembic_config, current_revisions, schema_heads, upgrade
from longyarn.storage.sessions import create_store_engine, database_url

from .helpers import EMBEDDING_MODEL, vector

NOW = datetime(2025, 1, 5, 9, 0, tzinfo=timezone.utc)


def fill_a_revision_0005_database(engine) -> None:
    """A story with two paragraphs, their memories and context, and a reader mid-move: plain
    SQL, as the schema at 0005 knew them."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO stories (id, title, premise, genre, outline, settings, head_step_id,"
                " readable, reader_may_extend, memory_version, created_at, updated_at) VALUES"
                " ('st0ry0000005', 'Salt', 'A harbour town.', 'sea story', 'Storms.', '{\"k\": 5}',"
                " NULL, TRUE, TRUE, 3, :now, :now)"
            ),
            {"now": NOW},
        )
        for step_id, parent, paragraph in (("p1", None, "The boats came in."), ("p2", "p1", "Mara counted them.")):
            connection.execute(
                text(
                    "INSERT INTO steps (id, story_id, parent_id, instruction, paragraph,"
                    " short_term_memory, memory_reason, next_instructions, backend, model,"
                    " fallbacks, created_at, deleted, branch_owner) VALUES (:id, 'st0ry0000005',"
                    " :parent, 'Go on.', :paragraph, 'Boats.', 'r', '[\"a\", \"b\", \"c\"]',"
                    " 'openai', 'gpt-old', '[]', :now, FALSE, NULL)"
                ),
                {"id": step_id, "parent": parent, "paragraph": paragraph, "now": NOW},
            )
            connection.execute(
                text(
                    "INSERT INTO memories (id, story_id, step_id, text, embedding, dim,"
                    " embedding_model, pinned, excluded, created_at) VALUES (:id, 'st0ry0000005',"
                    " :step, :text, :embedding, 8, :model, FALSE, FALSE, :now)"
                ),
                {"id": f"m-{step_id}", "step": step_id, "text": paragraph,
                 "embedding": vector(len(paragraph)).tobytes(), "model": EMBEDDING_MODEL, "now": NOW},
            )
        connection.execute(
            text(
                "INSERT INTO step_contexts (step_id, story_id, sections, recalled) VALUES"
                " ('p2', 'st0ry0000005', '[]', '[{\"memory_id\": \"m-p1\", \"score\": 0.5, \"pinned\": false}]')"
            )
        )
        connection.execute(text("UPDATE stories SET head_step_id = 'p2'"))
        connection.execute(
            text("INSERT INTO readers (id, name, token_hash, created_at) VALUES ('reader-5', 'Bo', :hash, :now)"),
            {"hash": "cd" * 32, "now": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO reader_moves (reader_id, story_id, parent_step_id, instruction,"
                " started_at, lease_until) VALUES ('reader-5', 'st0ry0000005', 'p2', 'Sail.', :now, :now)"
            ),
            {"now": NOW},
        )


def test_a_revision_0005_database_keeps_everything_and_gains_an_empty_bible_and_queue(empty_database):
    engine = create_store_engine(database_url(empty_database))
    upgrade(engine, "0005")
    fill_a_revision_0005_database(engine)
    engine.dispose()

    with open_store(empty_database) as store:
        assert current_revisions(store.engine) == schema_heads() == ("0007",)
        story = store.get_story("st0ry0000005")
        assert (story.title, story.settings, story.head_step_id, story.created_at) == (
            "Salt", {"k": 5}, "p2", NOW,
        )
        assert [s.paragraph for s in store.branch(story.id)] == ["The boats came in.", "Mara counted them."]
        version, entries, _ = store.memory_vectors(story.id, EMBEDDING_MODEL)
        assert version == 3 and [e.id for e in entries] == ["m-p1", "m-p2"]
        assert [m.memory_id for m in store.step_context("p2").recalled] == ["m-p1"]
        assert store.reader_move("reader-5", story.id, now=NOW - timedelta(seconds=1)).instruction == "Sail."
        assert store.list_entries(story.id) == [] and store.list_chapters(story.id) == []
        assert store.waiting_updates(story.id, "p2") == []

        # The old paragraphs carry the new rows: facts learned on them, chapters starting there.
        mara = store.add_entry(story.id, name="Mara", kind="character", facts=[FactDraft("Counts boats.")])
        store.add_fact(mara.id, "Mara knows the boat count.", from_paragraph=2, step_id="p2")
        store.add_chapter(story.id, title="Harbour", start_step_id="p1")
        assert len(store.facts_on_branch(story.id, "p2")) == 2
        assert [(c.title, n) for c, n in store.chapters_on_branch(story.id, "p2")] == [("Harbour", 1)]
        store.keep_proposed_updates(story.id, [KeptUpdate("u1", "p2", {"kind": "new_fact", "text": "Boats: 9."})])
        assert [kept.update["text"] for kept in store.waiting_updates(story.id, "p2")] == ["Boats: 9."]
        assert store.integrity_check() == "ok"


def test_the_bible_tables_render_for_postgresql_with_their_keys_and_checks():
    from alembic import command

    rendered = io.StringIO()
    config = alembic_config()
    config.output_buffer = rendered
    config.set_main_option("sqlalchemy.url", "postgresql://")
    command.upgrade(config, "0005:0007", sql=True)
    sql = rendered.getvalue()

    for table in ("bible_entries", "bible_facts", "chapters", "proposed_bible_updates"):
        assert f"CREATE TABLE {table}" in sql
    assert "CONSTRAINT ck_bible_facts_ends_after_start CHECK" in sql
    assert "ON DELETE CASCADE" in sql and "_alembic_tmp" not in sql
