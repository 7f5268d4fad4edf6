"""A database opened for reading only: commands that only read (export) use it."""

from __future__ import annotations

import pytest

from longyarn.recurrent_core.errors import LongyarnError
from longyarn.storage import open_store
from longyarn.storage.db import upgrade
from longyarn.storage.sessions import create_store_engine, database_url

from .helpers import write_chain


def test_a_read_only_store_reads_what_a_writer_stored(store, database):
    story = store.create_story(title="Bells", premise="p", genre="", outline="")
    write_chain(store, story.id, ["One.", "Two."])
    with open_store(database, read_only=True) as reading:
        assert [s.paragraph for s in reading.branch(story.id)] == ["One.", "Two."]
        with pytest.raises(Exception):
            reading.update_story(story.id, title="Changed")
    assert store.get_story(story.id).title == "Bells"


def test_a_read_only_store_refuses_a_schema_it_would_have_to_upgrade(empty_database):
    engine = create_store_engine(database_url(empty_database))
    upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(LongyarnError, match="cannot be upgraded while it is read-only"):
        open_store(empty_database, read_only=True)


@pytest.mark.sqlite_only("a missing file is SQLite's case")
def test_a_read_only_store_of_no_file_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "stories.db"
    with pytest.raises(LongyarnError, match="There is no database at"):
        open_store(missing, read_only=True)
    assert not (tmp_path / "nowhere").exists()
