"""Fixtures for the storage tests: a real SQLite file per test, and a story in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recurrent_core.types import Story
from storage import SqlStore, open_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A folder that does not exist yet: open_store must create it.
    return tmp_path / "stories" / "longyarn.db"


@pytest.fixture
def store(db_path: Path):
    with open_store(db_path) as opened:
        yield opened


@pytest.fixture
def story(store: SqlStore) -> Story:
    return store.create_story(
        title="The Lighthouse", premise="A keeper finds a door in the sea.", genre="fantasy",
        outline="1. The door. 2. The other side.",
    )
