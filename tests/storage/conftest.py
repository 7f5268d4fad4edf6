"""Fixtures for the storage tests: a fresh database per test, and a story in it.

Every test that opens a database through `database`, `empty_database` or `store` runs twice:
on a real SQLite file and on a real PostgreSQL database (skipped, saying why, where no
PostgreSQL server can run). `@pytest.mark.sqlite_only("why")` keeps a test on SQLite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from longyarn.recurrent_core.types import Story
from longyarn.storage import SqlStore, open_store

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and not metafunc.definition.get_closest_marker(
        "sqlite_only"
    ):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A folder that does not exist yet: open_store must create it.
    return tmp_path / "stories" / "longyarn.db"


def _postgres_database(request, *, migrated: bool):
    server = request.getfixturevalue("postgres_server")
    url = server.create_database(migrated=migrated)
    yield url
    server.drop_database(url)


@pytest.fixture
def empty_database(backend: str, db_path: Path, request):
    """What `open_store` takes for a database with no schema yet: a file path or a URL."""
    if backend == "sqlite":
        yield db_path
    else:
        yield from _postgres_database(request, migrated=False)


@pytest.fixture
def database(backend: str, db_path: Path, request):
    """A fresh database for `open_store`; on PostgreSQL already migrated, to save time."""
    if backend == "sqlite":
        yield db_path
    else:
        yield from _postgres_database(request, migrated=True)


@pytest.fixture
def store(database):
    with open_store(database) as opened:
        yield opened


@pytest.fixture
def story(store: SqlStore) -> Story:
    return store.create_story(
        title="The Lighthouse", premise="A keeper finds a door in the sea.", genre="fantasy",
        outline="1. The door. 2. The other side.",
    )
