"""Opening a database by URL: what a person is told when the driver or the server is missing."""

from __future__ import annotations

import sys

import pytest

from longyarn.recurrent_core.errors import LongyarnError
from longyarn.storage import open_store
from longyarn.storage.db import current_revisions, schema_heads


def test_a_postgresql_url_without_its_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed

    with pytest.raises(LongyarnError) as caught:
        open_store("postgresql://writer:hunter2@db.example/longyarn")

    message = str(caught.value)
    assert "'psycopg'" in message and "pip install 'longyarn[postgres]'" in message
    assert "hunter2" not in message and "\n" not in message


def test_an_unknown_kind_of_database_is_one_clear_sentence():
    with pytest.raises(LongyarnError, match="does not know.*postgresql://"):
        open_store("nosuchdb://somewhere/longyarn")


def test_an_unreachable_postgresql_server_is_one_clear_sentence(tmp_path):
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    # No server listens on a socket in an empty folder.
    url = f"postgresql://writer:hunter2@/longyarn?host={tmp_path}"

    with pytest.raises(LongyarnError) as caught:
        open_store(url)

    message = str(caught.value)
    assert message.startswith("Could not connect to the database at postgresql+psycopg://writer:***@")
    assert str(tmp_path) in message and "server is running" in message
    assert "hunter2" not in message and "\n" not in message


def test_a_plain_postgresql_url_opens_with_psycopg(postgres_server):
    url = postgres_server.create_database()  # empty: open_store migrates it
    try:
        with open_store(url.replace("postgresql+psycopg://", "postgresql://")) as store:
            assert store.location.startswith("postgresql+psycopg://")
            assert current_revisions(store.engine) == schema_heads()
    finally:
        postgres_server.drop_database(url)
